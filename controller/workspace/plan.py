"""How a workspace's model is laid out on its nodes: the numbers and names every builder needs.

Why a plain dataclass: the Machine, RayService, Job and serve-config builders all need the same
few facts (nodes, GPUs per node, how one model replica is split, which checkpoint at which dtype).
The estimator and the catalog in ``presets`` decide them; ``plan_for`` resolves them once into a
``Plan``, so the builders read only the Plan, stay pure and can be unit-tested without the catalog
(and the reconciler's injectable planner is the one way in for the catalog).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from controller.api.node import GPU_RESOURCE
from controller.api.validation import ValidationResult, bypasses_resource_checks, judge_fit, reconcile_problem
from controller.api.workspace import Workspace
from controller.workspace import byo
from presets.estimator import EstimateError, effective_dtype, estimate_nodes
from presets.registry import Catalog, Preset, default_catalog
from rayserve.inference_config import InferenceConfig


class PlanError(ValueError):
    """The workspace cannot be laid out (unknown preset or SKU, model too large...): the message says why.

    ``invalid``: a problem of the spec (ResourceReady=False/InvalidWorkspace, as the webhook would
    have said), not of the estimate (EstimateFailed: a misfit the bypass annotation let through).
    ``waiting``: nothing is wrong yet, a partitioned workspace waits for a node to plan from
    (ResourceReady=False/WaitingForNodes; a Node event wakes it).
    """

    def __init__(self, message: str, *, invalid: bool = False, waiting: bool = False) -> None:
        super().__init__(message)
        self.invalid = invalid
        self.waiting = waiting


@dataclass(frozen=True)
class Plan:
    """One workspace's layout. ``message`` explains the arithmetic for the ResourceReady condition.

    One model replica is ``pipeline_parallel`` stages (Ray workers) of ``tensor_parallel`` GPUs each.
    """

    preset: str
    instance_type: str
    node_count: int
    gpus_per_node: int
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    disk_gib: int | None = None
    message: str = ""
    max_context: int | None = None  # tokens per request the GPUs hold; None: the serve app's default
    kv_budget_tokens: int | None = None  # KV cache room of one replica (rows x tokens); None: unbounded
    model_source: str | None = None  # the preset's local path or hub id; None: the preset name
    model_revision: str | None = None  # the hub commit the preset pins (None: a directory, or unpinned)
    dtype: str | None = None  # the weights' dtype on this SKU; None: the serve app's default
    fake_gpu: bool = False  # the demo's fake SKU: it advertises a GPU, the model runs on CPUs
    runtime: InferenceConfig | None = None  # inference.config, checked (controller.workspace.runtime_config)
    served_name: str | None = None  # what clients put in `model`: the name the Workspace gave
    local_nvme: bool = False  # the SKU has local NVMe: the weights cache goes there (model_cache.py)
    hf_endpoint: str | None = None  # the operator's HF_ENDPOINT, for the serve pods; None: the Hub
    # what a worker asks for gpus_per_node of: whole GPUs, or a MIG profile's slices (resource.partition)
    gpu_resource: str = GPU_RESOURCE

    @property
    def model_name(self) -> str:
        """The served model name: the Workspace's own (a Hugging Face id stays one), else the preset's."""
        return self.served_name or self.preset

    @property
    def model(self) -> str:
        """What the serve app and the trainer load."""
        return self.model_source or self.preset

    @property
    def gpus_per_replica(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel

    @property
    def total_gpus(self) -> int:
        return self.node_count * self.gpus_per_node

    @property
    def max_replicas(self) -> int:
        """How many model replicas the nodes hold at once (the autoscaling ceiling)."""
        return max(1, self.total_gpus // max(1, self.gpus_per_replica))

    def with_node_count(self, node_count: int) -> Plan:
        """The same layout on a node count recorded earlier (status.targetNodeCount is set once)."""
        if node_count == self.node_count:
            return self
        return replace(self, node_count=node_count,
                       message=f"{self.message}; keeping the target of {node_count} nodes set earlier")


def plan_for(ws: Workspace, catalog: Catalog | None = None, nodes: Iterable[dict] = (), *,
             preset: Preset | None = None, sized_from: str = "") -> Plan:
    """Estimate with the preset catalog; raise PlanError with the estimator's explanation.

    The one place a reconcile pass runs the estimator: the reconciler's validation leaves the fit
    out (``controller.api.validation.reconcile_problem``) and a misfit is judged here by the same
    rule the webhook applies (``judge_fit``). ``ws`` is one that validation passed. ``preset``: a
    model the catalog does not list, resolved from its checkpoint (``model_resolver``), and
    ``sized_from`` what it was sized from, which the message (ResourceReady's) starts with. A
    partitioned workspace has no instance type: it is planned from the first of ``nodes`` (the
    cluster's Nodes) that can hold it (``byo.partition_sku``).
    """
    catalog = catalog or default_catalog()
    name, instance_type = ws.preset_name, ws.resource.instance_type
    if preset is None:
        preset = catalog.preset(name) if name else None
    partition = ws.resource.partition
    sku = catalog.sku(instance_type) if instance_type and partition is None else None
    if preset is not None and partition is not None and not instance_type:
        try:
            sku = byo.partition_sku(ws, list(nodes), catalog)
        except byo.NoPartitionNode as exc:
            raise PlanError(str(exc), waiting=True) from None
    if preset is None or sku is None:  # only for a workspace that skipped validation
        raise PlanError(reconcile_problem(ws, catalog=catalog) or "no known preset or instance type",
                        invalid=True)
    method = ws.tuning.method if ws.tuning else None
    try:
        est = estimate_nodes(preset, sku, ws.resource.count, tuning_method=method, catalog=catalog)
        if partition is not None and partition.mode == "mig" and est.gpus_needed > 1:
            raise EstimateError(f"{est.message}: a MIG workload runs on exactly one slice; pick a larger "
                                f"profile than {partition.profile}, or mode accelerator")
    except EstimateError as exc:
        judged = ValidationResult()
        path = "resource.partition" if partition is not None else "resource.instanceType"
        judge_fit(exc.message, bypasses_resource_checks(ws), judged, path)
        raise PlanError(judged.message or exc.message, invalid=not judged.allowed) from None
    return Plan(
        preset=preset.name,
        instance_type=instance_type or sku.name,
        node_count=est.node_count,
        gpus_per_node=est.gpus_per_node,
        tensor_parallel=est.tensor_parallel,
        pipeline_parallel=est.pipeline_parallel,
        disk_gib=preset.disk_gib,
        message=f"{sized_from + ' ' if sized_from else ''}Estimate: {est.message}.",
        max_context=est.max_context or preset.max_context,
        kv_budget_tokens=est.kv_budget_tokens,
        model_source=preset.model_source,
        model_revision=preset.model_revision,
        # the fake SKU's GPU is made up: the CPUs run the preset's own dtype
        dtype=preset.dtype if sku.fake else effective_dtype(preset, sku),
        fake_gpu=sku.fake,
        served_name=name,
        local_nvme=sku.nvme,
        gpu_resource=byo.partition_resource(ws),
    )
