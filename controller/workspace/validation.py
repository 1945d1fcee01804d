"""Whether a Workspace can be reconciled at all, with a message a person can act on.

The admission webhook rejects bad specs before they are stored, but it may be absent (a local run
without ``--webhook-port``, a failurePolicy of Ignore) and objects stored before a rule existed are
still served. So the reconciler runs the webhook's own create-time rules (``controller.webhook.
validation``, one source of truth) and, instead of crashing or retrying forever, reports the
problem in ResourceReady and a Warning Event. A few things the reconciler itself cannot do yet
(template inference) are added here.
"""

from __future__ import annotations

from controller.api.workspace import Workspace
from controller.webhook.validation import validate_workspace


def reconciler_problems(ws: Workspace) -> list[str]:
    """What the webhook allows but this reconciler cannot build (yet)."""
    if ws.inference is not None and ws.inference.preset is None and ws.inference.template is not None:
        return ["inference.template: custom pod templates are not supported yet; name a preset in "
                "inference.preset.name"]
    return []


def validate(ws: Workspace) -> str | None:
    """None if the workspace can be reconciled, else every problem joined into one message."""
    result = validate_workspace(ws)
    problems = [str(e) for e in result.errors] or reconciler_problems(ws)
    return "; ".join(problems) if problems else None
