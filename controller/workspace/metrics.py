"""Prometheus metrics about workspaces, on prometheus_client's default registry.

The Manager serves that registry on /metrics, next to controller-runtime's workqueue and
reconcile metrics. Kaito exports only counts by phase and preset; we add per-workspace
readiness gauges (alert on ``kaito_workspace_ready{condition="WorkspaceReady"} == 0``) and the
time from creation to WorkspaceReady, which is the number users feel.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from datetime import UTC, datetime

from prometheus_client import Gauge, Histogram

from controller.api.workspace import CONDITION_WORKSPACE_READY, Workspace

WORKSPACE_READY = Gauge(
    "kaito_workspace_ready",
    "Whether a workspace condition is True (1) or not (0).",
    ["namespace", "name", "condition"],
)
WORKSPACE_COUNT = Gauge(
    "kaito_workspace_count",
    "Workspaces by phase (pending, ready, notready, running, succeeded, failed, deleting).",
    ["phase"],
)
WORKSPACE_PRESET_COUNT = Gauge("kaito_workspace_preset_count", "Workspaces by preset.", ["preset_name"])
TIME_TO_READY = Histogram(
    "kaito_workspace_time_to_ready_seconds",
    "Seconds from a workspace's creationTimestamp to its first WorkspaceReady=True.",
    ["preset_name"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 7200),
)

_lock = threading.Lock()
_known: dict[tuple[str, str], set[str]] = {}  # (namespace, name) -> condition labels exported


def phase(ws: Workspace) -> str:
    if ws.metadata.deletion_timestamp:
        return "deleting"
    state = ws.status.state if ws.status else None
    return (state or "Pending").lower()


def observe_workspace(ws: Workspace) -> None:
    """Set the readiness gauges of one workspace from its status."""
    key = (ws.namespace or "", ws.name)
    conds = (ws.status.conditions if ws.status else None) or []
    with _lock:
        seen = _known.setdefault(key, set())
        for cond in conds:
            WORKSPACE_READY.labels(key[0], key[1], cond.type).set(1 if cond.status == "True" else 0)
            seen.add(cond.type)


def forget_workspace(namespace: str, name: str) -> None:
    """Drop the gauges of a deleted workspace so it does not look 'not ready' forever."""
    with _lock:
        for cond in _known.pop((namespace, name), set()):
            with contextlib.suppress(KeyError):
                WORKSPACE_READY.remove(namespace, name, cond)


def refresh_counts(workspaces: Iterable[Workspace]) -> None:
    """Recount workspaces by phase and preset (cheap: one pass over the cache)."""
    phases: dict[str, int] = {}
    presets: dict[str, int] = {}
    for ws in workspaces:
        phases[phase(ws)] = phases.get(phase(ws), 0) + 1
        preset = ws.preset_name or "template"
        presets[preset] = presets.get(preset, 0) + 1
    with _lock:
        for p in ("pending", "ready", "notready", "running", "succeeded", "failed", "deleting", *phases):
            WORKSPACE_COUNT.labels(p).set(phases.get(p, 0))
        for existing in list(_preset_labels):
            if existing not in presets:
                WORKSPACE_PRESET_COUNT.labels(existing).set(0)
        for preset, n in presets.items():
            WORKSPACE_PRESET_COUNT.labels(preset).set(n)
            _preset_labels.add(preset)


_preset_labels: set[str] = set()


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def observe_ready_transition(ws: Workspace, now: datetime | None = None) -> float | None:
    """Record creation -> WorkspaceReady for a workspace that just turned ready; returns the seconds."""
    created = _parse_time(ws.metadata.creation_timestamp)
    cond = ws.condition(CONDITION_WORKSPACE_READY)
    if created is None or cond is None or cond.status != "True":
        return None
    end = cond.last_transition_time or now or datetime.now(UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    seconds = max(0.0, (end - created).total_seconds())
    TIME_TO_READY.labels(ws.preset_name or "template").observe(seconds)
    return seconds
