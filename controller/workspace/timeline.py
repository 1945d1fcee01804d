"""The cold-start timeline in ``status.timeline``: when each phase ended, and how long it took.

Why in the status: a cold start is minutes of GPU time whose parts nobody sees (Kaito's maintainers
timed a 27B model's 966 s by hand, kaito-project/kaito#2325). Here every phase's end is recorded
once, when the reconciler first sees it, so ``kubectl get workspace -o yaml`` answers "where did
the time go" and the controller exports one histogram per phase
(``kaito_workspace_phase_seconds``). Phases, in order:

- ``NodesCreated``: every Machine exists (the newest Machine's creationTimestamp);
- ``NodesReady``: every Machine is Ready (the last Ready transition);
- ``RayClusterUp``: KubeRay reports the RayService's Ray cluster ready (``rayClusterStatus.state``);
- ``WeightsLoaded``: every Serve deployment of the RayService is HEALTHY;
- ``FirstRequestAnswered``: the endpoint answered a one-token request (``probe.py``).

How the serve replica reports its load: through the RayService status, as KubeRay writes it. Serve
health-checks a replica only once its constructor has returned, and the constructor is where the
weights are read (``rayserve.service.LLMService``), so a deployment that Serve calls HEALTHY has its
weights loaded; KubeRay copies each deployment's status from Serve into
``applicationStatuses.<app>.serveDeploymentStatuses`` and stamps the write with ``lastUpdateTime``,
which is the phase's end. The alternative, an annotation the replica would write on its RayService
or Pod, is out: the serve app has no Kubernetes credentials and should get none (a model server
that parses untrusted prompts must not be able to edit cluster objects), so it could not write one,
and any component that wrote it for the replica would be a second KubeRay. The status route needs
nothing new in the data plane, works the same with real KubeRay and the local stand-in (which
copies Serve's statuses exactly as KubeRay does), and is the one a Workspace can be trusted on.

Times come from the objects themselves where they carry one (Machines' timestamps, KubeRay's
``lastUpdateTime``), so a controller that restarts mid-start records the same ends; otherwise the
pass's clock. A phase seen only through a later one (the cluster state was never reported, the
weights were) ends with it. The cold start's ends are kept monotone and never move once recorded
(a restart's entries, below, describe the latest one). A workspace that
was already serving when this controller first saw it gets no timeline: its start is not known.

After the cold start, the timeline keeps the latest **restart** of the serve deployments (a replica
or its container restarted, a node rebooted, a redeploy of a changed serve config): once
``WeightsLoaded`` is recorded, a RayService status whose deployments are not all HEALTHY records
``ServingInterrupted`` (ended when KubeRay stamped that status; seconds: how long it had served
since the weights were last loaded), and all HEALTHY again records ``WeightsReloaded`` (seconds:
since the interruption, i.e. the restart plus the reload). Both carry a ``count`` and are replaced
on the next restart: the status is a list keyed by phase, so one entry per phase, and the latest
restart is the one a person asks about (did it download the weights again? how long was it down?);
the histogram observes every reload. An interruption is open while it has been counted more often
than reloads, which needs no comparison of clocks. A pending cluster being prepared beside a
healthy active one (KubeRay's zero-downtime upgrade) is no interruption: the active one serves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from controller.api.workspace import (
    PHASE_NODES_CREATED,
    PHASE_NODES_READY,
    PHASE_RAY_CLUSTER_UP,
    PHASE_SERVING_INTERRUPTED,
    PHASE_WEIGHTS_LOADED,
    PHASE_WEIGHTS_RELOADED,
    PhaseEnd,
)

HEALTHY = "HEALTHY"
RUNNING = "RUNNING"
CLUSTER_READY = "ready"


def parse_time(text: object) -> datetime | None:
    if isinstance(text, datetime):
        return text if text.tzinfo else text.replace(tzinfo=UTC)
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def format_time(when: datetime) -> str:
    """RFC 3339 in UTC with milliseconds (finer than metav1.Time: phases can take under a second)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def machine_ends(machines: Iterable[dict], desired: int) -> dict[str, datetime]:
    """NodesCreated / NodesReady from the workspace's Machines, once all ``desired`` exist / are Ready."""
    live = [m for m in machines if not (m.get("metadata") or {}).get("deletionTimestamp")]
    if desired <= 0 or len(live) < desired:
        return {}
    created = [parse_time((m.get("metadata") or {}).get("creationTimestamp")) for m in live]
    out: dict[str, datetime] = {}
    if all(created):
        out[PHASE_NODES_CREATED] = max(t for t in created if t)
    ready: list[datetime | None] = []
    for m in live:
        cond = next((c for c in (m.get("status") or {}).get("conditions") or []
                     if c.get("type") == "Ready"), None)
        if cond is None or cond.get("status") != "True":
            return out
        ready.append(parse_time(cond.get("lastTransitionTime")))
    if all(ready):
        out[PHASE_NODES_READY] = max(t for t in ready if t)
    return out


def _service_statuses(status: dict) -> list[dict]:
    return [s for s in (status.get("activeServiceStatus"), status.get("pendingServiceStatus"))
            if isinstance(s, dict) and s]


def rayservice_ends(rs: dict | None, now: datetime) -> dict[str, datetime]:
    """RayClusterUp / WeightsLoaded from the RayService status KubeRay (or the stand-in) wrote."""
    status = (rs or {}).get("status") or {}
    if not status:
        return {}
    stamped = parse_time(status.get("lastUpdateTime")) or now
    out: dict[str, datetime] = {}
    services = _service_statuses(status)
    if any(((s.get("rayClusterStatus") or {}).get("state") or "").lower() == CLUSTER_READY for s in services):
        out[PHASE_RAY_CLUSTER_UP] = stamped
    for service in services:
        apps = service.get("applicationStatuses") or {}
        if apps and all(_loaded(app) for app in apps.values()):
            out[PHASE_WEIGHTS_LOADED] = stamped
            break
    return out


def serving(rs: dict | None, now: datetime) -> tuple[bool | None, datetime]:
    """Whether every Serve deployment of the RayService is HEALTHY (None: KubeRay reports nothing
    yet, or the RayService is gone), and when KubeRay stamped that status."""
    status = (rs or {}).get("status") or {}
    if not _service_statuses(status):
        return None, now
    return PHASE_WEIGHTS_LOADED in rayservice_ends(rs, now), parse_time(status.get("lastUpdateTime")) or now


def _loaded(app: dict) -> bool:
    deployments = app.get("serveDeploymentStatuses") or {}
    if deployments:
        return all((d or {}).get("status") == HEALTHY for d in deployments.values())
    return app.get("status") == RUNNING  # a KubeRay that reports apps only


def advance(recorded: Sequence[PhaseEnd] | None, seen: dict[str, datetime], phases: Sequence[str],
            created: datetime | None) -> list[PhaseEnd]:
    """The timeline with the phases ``seen`` this pass appended (recorded ones never move).

    ``phases`` in order; a phase not seen but followed by a seen one ends with it; ``created`` is
    where the first phase starts (the workspace's creationTimestamp).
    """
    out = list(recorded or [])
    done = {p.phase: p for p in out}
    previous = created
    for index, phase in enumerate(phases):
        if phase in done:
            previous = parse_time(done[phase].ended_at) or previous
            continue
        later = [seen[p] for p in phases[index:] if p in seen]
        if not later:
            break
        end = seen.get(phase) or min(later)
        if previous is not None and end < previous:
            end = previous  # monotone: a phase cannot end before the one it follows
        took = (end - previous).total_seconds() if previous is not None else 0.0
        record = PhaseEnd(phase=phase, ended_at=format_time(end), seconds=round(max(0.0, took), 3))
        out.append(record)
        done[phase] = record
        previous = end
    return out


def restarts(recorded: Sequence[PhaseEnd], up: bool | None, at: datetime) -> list[PhaseEnd]:
    """The timeline with the latest restart recorded (the module docstring): ``up`` is whether every
    deployment is HEALTHY now (``serving``), ``at`` when KubeRay said so."""
    out = list(recorded)
    entries = {p.phase: p for p in out}
    loaded = ended(out, PHASE_WEIGHTS_LOADED)
    if up is None or loaded is None:
        return out
    down, back = entries.get(PHASE_SERVING_INTERRUPTED), entries.get(PHASE_WEIGHTS_RELOADED)
    downs, backs = (down.count or 1) if down else 0, (back.count or 1) if back else 0
    if not up and downs == backs:
        since = max(loaded, ended(out, PHASE_WEIGHTS_RELOADED) or loaded)
        return _put(out, PHASE_SERVING_INTERRUPTED, max(at, since), since, downs + 1)
    if up and downs > backs:
        since = ended(out, PHASE_SERVING_INTERRUPTED) or loaded
        return _put(out, PHASE_WEIGHTS_RELOADED, max(at, since), since, backs + 1)
    return out


def _put(timeline: list[PhaseEnd], phase: str, end: datetime, since: datetime, count: int) -> list[PhaseEnd]:
    record = PhaseEnd(phase=phase, ended_at=format_time(end), seconds=round((end - since).total_seconds(), 3),
                      count=count)
    if any(p.phase == phase for p in timeline):
        return [record if p.phase == phase else p for p in timeline]
    return [*timeline, record]


def ended(recorded: Sequence[PhaseEnd] | None, phase: str) -> datetime | None:
    """When ``phase`` ended, if the timeline has it."""
    return next((parse_time(p.ended_at) for p in recorded or [] if p.phase == phase), None)


def new_phases(before: Sequence[PhaseEnd] | None, after: Sequence[PhaseEnd] | None) -> list[PhaseEnd]:
    """The entries ``after`` has that ``before`` had not, a reload as often as it happens (what the
    histogram observes); not ServingInterrupted, whose seconds are time served, not a phase's."""
    had = {(p.phase, p.ended_at) for p in before or []}
    return [p for p in after or []
            if (p.phase, p.ended_at) not in had and p.phase != PHASE_SERVING_INTERRUPTED]
