"""``inference.config``: the ConfigMap with the serve app's runtime settings, checked before any node.

Why checked here, before Machines: a GPU node that waits for a fixed ConfigMap only costs money,
and a setting the serve app refuses would surface as a replica failing on that node minutes later.
The parser is the data plane's own (``rayserve.inference_config``), so what passes here is what the
replica runs; the settings then travel in the Plan (``Plan.runtime``) to ``serveconfig``. Missing
ConfigMap: wait (it may be created after the Workspace, as with ``tuning.config``); invalid: a
failed condition with the message until it is fixed. The controller reads the ConfigMap with a GET
each pass (no informer: caching every ConfigMap of the cluster to notice one costs more), so an
edit reaches the serve config on the next pass.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from controller.api.workspace import Workspace
from controller.workspace.plan import Plan
from controller.workspace.serveconfig import serve_input
from rayserve.inference_config import CONFIG_KEY, InferenceConfigError, parse_inference_config

REASON_INFERENCE_CONFIG_NOT_FOUND = "InferenceConfigNotFound"  # wait: the ConfigMap may come later
REASON_INFERENCE_CONFIG_INVALID = "InferenceConfigInvalid"  # failed until the ConfigMap is fixed


@dataclass(frozen=True)
class ConfigProblem:
    """Why the config keeps the Machines back (``Observation.hold_for`` reads it)."""

    reason: str
    message: str
    failed: bool


def check_inference_config(ws: Workspace, configmap: dict | None,
                           plan: Plan) -> tuple[Plan, ConfigProblem | None]:
    """``plan`` with the parsed settings, or the problem: ``configmap`` is the GET's answer (None: 404)."""
    assert ws.inference is not None and ws.inference.config
    name = ws.inference.config
    where = f"ConfigMap {name} (inference.config)"
    if configmap is None:
        message = f"waiting for {where} with key {CONFIG_KEY}: not found in namespace {ws.namespace}"
        return plan, ConfigProblem(REASON_INFERENCE_CONFIG_NOT_FOUND, message, failed=False)
    data = configmap.get("data") or {}
    if CONFIG_KEY not in data:
        keys = ", ".join(sorted(data)) or "none"
        return plan, _invalid(where, f"no key {CONFIG_KEY} (its keys: {keys})")
    try:
        config = parse_inference_config(data[CONFIG_KEY])
    except InferenceConfigError as exc:
        return plan, _invalid(where, f"{CONFIG_KEY}: {exc}")
    if config.max_context and plan.max_context and config.max_context > plan.max_context:
        return plan, _invalid(where, f"{CONFIG_KEY}: max_context {config.max_context} exceeds the "
                              f"{plan.max_context} tokens a request may hold on {plan.instance_type} for "
                              f"{plan.preset}")
    ignored = config.ignored()
    note = f" inference.config: no effect here: {', '.join(ignored)}." if ignored else ""
    planned = replace(plan, runtime=config, message=plan.message + note)
    try:
        serve_input(ws, planned)  # the builder's own coherence rules (batch vs autoscaling target, ...)
    except InferenceConfigError as exc:
        return plan, _invalid(where, f"{CONFIG_KEY}: {exc}")
    return planned, None


def _invalid(where: str, message: str) -> ConfigProblem:
    return ConfigProblem(REASON_INFERENCE_CONFIG_INVALID, f"{where}: {message}", failed=True)
