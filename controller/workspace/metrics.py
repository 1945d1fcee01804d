"""Prometheus metrics about workspaces, on prometheus_client's default registry.

The Manager serves that registry on /metrics, next to controller-runtime's workqueue and
reconcile metrics. Kaito exports only counts by phase and preset; we add per-workspace
readiness gauges (alert on ``kaito_workspace_ready{condition="WorkspaceReady"} == 0``), the
time from creation to WorkspaceReady, which is the number users feel, and how long each phase of
that cold start took (``status.timeline``, one histogram series per phase).

Why the gauges are a collector over the Workspace cache (as ``provisioner.metrics``'
``MachinePhaseCollector``): the cache is the truth, so counting it when Prometheus asks costs one
pass per scrape, while a reconciler keeping gauges in step would pay that pass on every reconcile
(O(N) per pass, O(N^2) for N workspaces) and drift whenever an event is missed. A deleted workspace
leaves the cache and with it its series. Only the time to ready and the phase durations are recorded
by the reconciler: they are events (a first transition, a phase's first end), not a state the cache
can be asked for.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, NamedTuple

from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from controller.api.workspace import CONDITION_WORKSPACE_READY, PhaseEnd, Workspace

# always exported (0 when none), so a dashboard's series exist before the first workspace does
PHASES = ("pending", "ready", "notready", "running", "succeeded", "failed", "deleting")
TEMPLATE = "template"  # the preset label of a workspace that names no preset

TIME_TO_READY = Histogram(
    "kaito_workspace_time_to_ready_seconds",
    "Seconds from a workspace's creationTimestamp to its first WorkspaceReady=True.",
    ["preset_name"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 7200),
)

PHASE_SECONDS = Histogram(
    "kaito_workspace_phase_seconds",
    "Seconds each cold-start phase of a workspace took (status.timeline), observed when the phase ends.",
    ["phase", "preset_name"],
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600),
)


class Facts(NamedTuple):
    """What the gauges need of one cached Workspace."""

    namespace: str
    name: str
    phase: str
    preset: str
    conditions: tuple[tuple[str, str], ...]  # (type, status)


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def facts(obj: dict) -> Facts:
    """Read the few fields the gauges need straight from the cached dict.

    Not ``Workspace.model_validate``: a scrape reads every cached workspace, and a full pydantic
    parse of each would hold the GIL (and the workers) for ~0.1 s per scrape at 1000 workspaces.
    """
    meta, status = _dict(obj.get("metadata")), _dict(obj.get("status"))
    preset = _dict(_dict(obj.get("inference")).get("preset")) or _dict(_dict(obj.get("tuning")).get("preset"))
    phase = "deleting" if meta.get("deletionTimestamp") else str(status.get("state") or "Pending").lower()
    conditions = tuple(
        (str(c.get("type")), str(c.get("status")))
        for c in status.get("conditions") or () if isinstance(c, dict) and c.get("type")
    )
    return Facts(str(meta.get("namespace") or ""), str(meta.get("name") or ""), phase,
                 str(preset.get("name") or TEMPLATE), conditions)


class WorkspaceCollector(Collector):
    """``kaito_workspace_ready``, ``kaito_workspace_count`` and ``kaito_workspace_preset_count``,
    computed from the Workspace cache at scrape time (see the module docstring)."""

    def __init__(self, workspaces: Callable[[], Iterable[dict]]) -> None:
        self._workspaces = workspaces
        self._lock = threading.Lock()
        # presets seen before keep a 0 series when their last workspace goes (a count that drops
        # to 0, not a series that vanishes); bounded by the catalog
        self._presets: set[str] = set()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        seen = [facts(obj) for obj in self._workspaces()]
        ready = GaugeMetricFamily(
            "kaito_workspace_ready", "Whether a workspace condition is True (1) or not (0).",
            labels=["namespace", "name", "condition"],
        )
        for ws in seen:
            for type_, status in ws.conditions:
                ready.add_metric([ws.namespace, ws.name, type_], 1 if status == "True" else 0)
        yield ready
        phases = Counter(ws.phase for ws in seen)
        count = GaugeMetricFamily(
            "kaito_workspace_count",
            "Workspaces by phase (pending, ready, notready, running, succeeded, failed, deleting).",
            labels=["phase"],
        )
        for name in dict.fromkeys((*PHASES, *sorted(phases))):
            count.add_metric([name], phases.get(name, 0))
        yield count
        presets = Counter(ws.preset for ws in seen)
        with self._lock:
            self._presets.update(presets)
            labels = sorted(self._presets)
        by_preset = GaugeMetricFamily("kaito_workspace_preset_count", "Workspaces by preset.",
                                      labels=["preset_name"])
        for name in labels:
            by_preset.add_metric([name], presets.get(name, 0))
        yield by_preset


_registered: dict[int, WorkspaceCollector] = {}  # id(registry) -> the collector registered there
_registered_lock = threading.Lock()


def register_collector(workspaces: Callable[[], Iterable[dict]],
                       registry: CollectorRegistry = REGISTRY) -> WorkspaceCollector:
    """Export the gauges of ``workspaces`` (a Workspace store's ``list``) on ``registry``.

    One set of workspace gauges per registry: a second call (a test building another Manager in
    the same process) replaces the collector of the first rather than failing on duplicate names.
    """
    collector = WorkspaceCollector(workspaces)
    with _registered_lock:
        old = _registered.pop(id(registry), None)
        if old is not None:
            registry.unregister(old)
        registry.register(collector)
        _registered[id(registry)] = collector
    return collector


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
    TIME_TO_READY.labels(ws.preset_name or TEMPLATE).observe(seconds)
    return seconds


def observe_phases(ws: Workspace, phases: Iterable[PhaseEnd]) -> None:
    """Record the phases of ``ws``'s timeline that just ended (each once: the reconciler passes the
    phases its status write added)."""
    for phase in phases:
        PHASE_SECONDS.labels(phase.phase, ws.preset_name or TEMPLATE).observe(phase.seconds)
