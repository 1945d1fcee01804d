"""How a workspace's model is laid out on its nodes: the numbers every builder needs.

Why a plain dataclass: the Machine, RayService, Job and serve-config builders all need the same
few numbers (nodes, GPUs per node, how one model replica is split). The estimator in ``presets``
decides them; ``plan_for`` turns its answer into a ``Plan`` so the builders stay pure and can be
unit-tested without the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from controller.api.workspace import Workspace


class PlanError(ValueError):
    """The workspace cannot be laid out (unknown preset or SKU, model too large...): the message says why."""


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
    max_context: int | None = None  # tokens per request the GPUs hold; None: the preset's limit
    kv_budget_tokens: int | None = None  # KV cache room of one replica (rows x tokens); None: unbounded

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


def plan_for(ws: Workspace) -> Plan:
    """Estimate with the preset catalog; raise PlanError with the estimator's explanation."""
    from presets.estimator import EstimateError, estimate_for
    from presets.registry import get_preset

    name = ws.preset_name
    if not name:
        raise PlanError("inference.template is not supported yet: name a preset in inference.preset.name")
    if not ws.resource.instance_type:
        raise PlanError("resource.instanceType is required: name the GPU VM SKU to provision")
    method = ws.tuning.method if ws.tuning else None
    try:
        est = estimate_for(name, ws.resource.instance_type, ws.resource.count, tuning_method=method)
    except EstimateError as exc:
        raise PlanError(exc.message) from None
    preset = get_preset(name)
    return Plan(
        preset=name,
        instance_type=ws.resource.instance_type,
        node_count=est.node_count,
        gpus_per_node=est.gpus_per_node,
        tensor_parallel=est.tensor_parallel,
        pipeline_parallel=est.pipeline_parallel,
        disk_gib=preset.disk_gib if preset else None,
        message=f"Estimate: {est.message}.",
        max_context=est.max_context,
        kv_budget_tokens=est.kv_budget_tokens,
    )
