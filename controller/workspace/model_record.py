"""What an uncatalogued model id was resolved to, kept on the Workspace (``status.resolvedModel``).

Why keep it: the resolved preset otherwise lives only in the controller's memory
(``model_resolver``), so a controller restarted while the hub is down (an outage, a network policy
change, a rate limit) could not plan a Workspace that is serving fine, and turned it NotReady with
``ModelHubUnreachable``. And the hub's ``main`` moves: a later read could size the nodes from a
different checkpoint than the one running, and serve pods restarted after a push would load new
weights under an unchanged Workspace. So the first resolution is recorded, with the commit sha the
hub reported, and every later pass (of this controller or a restarted one) plans from the record
without a hub read; the serve config loads that commit (``ModelSpec.revision``), and a restarted
replica whose cache holds it reads no file from the hub.

Why the status and not an annotation: an annotation is part of the object a Workspace author
writes (``kubectl apply``, ``edit``), so anyone allowed to create a Workspace could forge a preset
(a 70B model recorded as 1 GiB to get one small node, then OOM it) or point the serve pods at
another commit. The status subresource is written only by principals granted
``workspaces/status``: the controller's ServiceAccount (config/chart's RBAC gives it to no one
else). The status is also the controller's observation, which this is: what the hub said, when.
What it costs: a Workspace re-created from its manifest (a backup restored with ``kubectl apply``)
has no status, so no record, and the controller resolves it again, as on a first pass.

Why the derived preset, not the sizing inputs (config.json and the safetensors headers): the
inputs are up to megabytes for a sharded checkpoint's headers, the preset is ~20 numbers; and the
nodes were bought for this preset (``status.targetNodeCount`` is set once), so re-deriving it with
a newer controller's rules would change nothing a running Workspace uses. A record that no longer
parses (a controller whose Preset lost a field) or names another model is ignored: the model is
resolved again.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from controller.api.workspace import ResolvedModelStatus, Workspace
from controller.workspace.model_resolver import ResolvedModel
from presets.registry import Preset

log = logging.getLogger(__name__)
MAX_SIZED_FROM = 1024


def record(model: ResolvedModel) -> ResolvedModelStatus:
    """The status record of a resolved model."""
    assert model.preset.hf_model_id, "an uncatalogued model is named by its Hugging Face id"
    return ResolvedModelStatus(
        name=model.preset.hf_model_id, revision=model.revision, endpoint=model.endpoint,
        sized_from=model.summary[:MAX_SIZED_FROM],
        preset=model.preset.model_dump(mode="json", exclude_defaults=True))


def recalled(ws: Workspace, model_id: str) -> ResolvedModel | None:
    """The model ``ws``'s status recorded for ``model_id``, or None (none, another id, unparsable)."""
    kept = ws.status.resolved_model if ws.status else None
    if kept is None or kept.name.lower() != model_id.lower():
        return None
    try:
        preset = Preset.model_validate(kept.preset)
    except ValidationError as exc:
        log.info("workspace %s: status.resolvedModel does not parse (%s); resolving %s again",
                 ws.key, exc.error_count(), model_id)
        return None
    return ResolvedModel(preset, kept.revision, kept.sized_from, kept.endpoint)  # preset.revision: the pin
