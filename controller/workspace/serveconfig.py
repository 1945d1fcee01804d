"""The ``serveConfigV2`` text of a workspace's RayService.

The serve config is owned by ``rayserve.builder`` (the data plane knows its own application);
this module only gathers the builder's inputs from the Workspace and its Plan: the preset's
model, the adapters (mounted at /mnt/adapter/<name> by the RayService pods), the autoscaling
range the nodes allow, and how one replica is split into pipeline workers.
"""

from __future__ import annotations

from typing import Any

from controller.api.workspace import Workspace
from controller.workspace import names
from controller.workspace.inference import adapter_path
from controller.workspace.plan import Plan


def serve_inputs(ws: Workspace, plan: Plan) -> dict[str, Any]:
    """Plain inputs for the builder: model spec, adapters, autoscaling, parallelism, port."""
    from presets.estimator import effective_dtype
    from presets.registry import get_preset, get_sku

    preset = get_preset(plan.preset)
    sku = get_sku(plan.instance_type)
    if preset is None:
        raise ValueError(f"unknown preset {plan.preset!r}")
    dtype = effective_dtype(preset, sku) if sku else preset.dtype
    model = {
        "name": preset.name,
        "path": preset.model_source,
        "dtype": "auto" if sku is not None and sku.fake else dtype,
        "max_context": preset.max_context,
    }
    adapters = [
        {"name": a.source.name, "path": adapter_path(a), "strength": float(a.strength or "1.0")}
        for a in ((ws.inference.adapters if ws.inference else None) or [])
        if a.source.name
    ]
    autoscaling = {
        "min_replicas": 1,
        "initial_replicas": 1,
        "max_replicas": plan.max_replicas,
        "target_ongoing_requests": 8,
    }
    parallel = {
        "workers": plan.pipeline_parallel,
        "gpus_per_worker": plan.tensor_parallel if plan.gpus_per_node else 0,
    }
    return {"model": model, "adapters": adapters, "autoscaling": autoscaling, "parallel": parallel,
            "port": names.SERVE_PORT}


def build_serve_config(ws: Workspace, plan: Plan) -> str:
    """The YAML text for ``spec.serveConfigV2``, from rayserve's builder."""
    from rayserve import builder  # type: ignore[attr-defined]

    inputs = serve_inputs(ws, plan)
    return builder.build_serve_config(**inputs)
