"""The ``serveConfigV2`` text of a workspace's RayService, from ``rayserve.builder``.

The serve config is owned by the data plane (``rayserve.builder`` knows its own application);
this module only gathers the builder's inputs from the Workspace and its Plan (never from the
catalog: ``plan_for`` resolved the preset): the model, the adapters (mounted at /mnt/adapter/<name>
in the Ray pods), the autoscaling range the nodes allow, and how one replica is split into
pipeline workers with placement-group bundles, and ``inference.config``'s settings over them.
"""

from __future__ import annotations

from controller.api.workspace import Workspace
from controller.workspace import names, ray_resources
from controller.workspace.inference import adapter_path, api_key_env
from controller.workspace.plan import Plan
from rayserve.builder import AutoscalingSpec, ServeConfigInput
from rayserve.builder import build_serve_config as _build
from rayserve.inference_config import apply_inference_config
from rayserve.spec import AdapterSpec, EngineSpec, ModelSpec


def serve_input(ws: Workspace, plan: Plan) -> ServeConfigInput:
    """The builder's input: model, adapters, autoscaling within the nodes' GPUs, replica layout."""
    fake = plan.fake_gpu
    # None: the serve app's default (and for the revision: the repo's main branch, an unpinned preset)
    given = {"dtype": plan.dtype, "max_context": plan.max_context, "revision": plan.model_revision}
    model = ModelSpec(name=plan.model_name, path=plan.model,
                      **{k: v for k, v in given.items() if v is not None})
    adapters = [
        AdapterSpec(name=a.source.name, path=adapter_path(a), strength=float(a.strength or "1.0"))
        for a in ((ws.inference.adapters if ws.inference else None) or [])
        if a.source.name
    ]
    # Stages of a replica that fits on one node stay together (NVLink, no cross-node hops);
    # a replica larger than a node must spread its stages over several nodes.
    spans_nodes = plan.gpus_per_replica > plan.gpus_per_node
    spec = ServeConfigInput(
        model=model,
        adapters=adapters,
        autoscaling=AutoscalingSpec(min_replicas=1, initial_replicas=1, max_replicas=plan.max_replicas),
        workers_per_replica=plan.pipeline_parallel,
        # A stage asks for its GPUs, so each stage is placed on a GPU node and the head (no GPUs)
        # holds none. On the fake SKU a replica on one node asks for none (it runs on any CPU: the
        # head of the local stand-in, at once), but stages spread over nodes ask for the GPU their
        # nodes advertise, so they sit on distinct Ray nodes as on GPUs (the CPUs still run them).
        gpus_per_worker=0 if fake and not spans_nodes else plan.tensor_parallel,
        # each stage's GPUs as that many rank actors, one GPU each (on the fake SKU: one CPU stage)
        tensor_parallel=1 if fake else plan.tensor_parallel,
        cpus_per_worker=ray_resources.actor_cpus(plan),
        replica_cpus=ray_resources.actor_cpus(plan),
        placement_strategy="PACK" if spans_nodes else "STRICT_PACK",
        serve_port=names.SERVE_PORT,
        # the fake SKU's GPU memory is made up (the model runs on CPU): no budget to keep to
        engine=EngineSpec(kv_budget_tokens=None if fake else plan.kv_budget_tokens),
        api_key_env=api_key_env(ws),
    )
    # inference.config's settings over the estimate (checked by runtime_config before any node)
    return apply_inference_config(spec, plan.runtime, plan.max_replicas) if plan.runtime else spec


def build_serve_config(ws: Workspace, plan: Plan) -> str:
    """The YAML text for ``spec.serveConfigV2`` (deterministic: same workspace, same bytes)."""
    return _build(serve_input(ws, plan))
