"""Whether a Workspace can be reconciled at all, with a message a person can act on.

The admission webhook (controller/webhook) rejects bad specs before they are stored, but the
webhook may be absent (a local run without it, a failurePolicy of Ignore) and objects written
before a rule existed are still served. So the reconciler runs the same checks and, instead of
crashing or retrying forever, reports the problem in ResourceReady and an Event.
"""

from __future__ import annotations

from controller.api.workspace import Workspace


def _webhook_validate(ws: Workspace) -> list[str] | None:
    """The webhook's own create-time checks, when the webhook package is present."""
    try:
        from controller.webhook import validation  # type: ignore[attr-defined]
    except ImportError:
        return None
    fn = getattr(validation, "validate_workspace", None)
    if fn is None:
        return None
    result = fn(ws)
    if not result:
        return []
    if isinstance(result, str):
        return [result]
    return [str(r) for r in result]


def basic_problems(ws: Workspace) -> list[str]:
    """The checks the reconciler cannot proceed without, whatever the webhook says."""
    problems: list[str] = []
    if (ws.inference is None) == (ws.tuning is None):
        which = "both" if ws.inference is not None else "neither"
        problems.append(f"exactly one of inference or tuning must be specified, got {which}")
    if ws.inference is not None and ws.inference.preset is None:
        problems.append("inference.template is not supported yet: name a preset in inference.preset.name")
    if not ws.resource.instance_type:
        problems.append("resource.instanceType is required: name the GPU VM SKU to provision")
    return problems


def validate(ws: Workspace) -> str | None:
    """None if the workspace is fine, else every problem joined into one message."""
    problems = basic_problems(ws)
    if not problems:
        problems = _webhook_validate(ws) or []
    return "; ".join(problems) if problems else None
