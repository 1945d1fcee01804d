"""Why inference is not up, in the words of the layer that knows: the kubelet's and the scheduler's
reasons on the Ray pods, and Ray Serve's deployment messages that KubeRay copies into the RayService.

Why this exists: the RayService alone says "llm=DEPLOYING" for a replica that will never be placed
and "waiting for the Ray cluster" for a head pod whose image does not exist; a person can act on
"ImagePullBackOff: Back-off pulling image ..." or "needs GPU 1, the cluster has CPU 1.5", not on
"waiting". Pure: the reconciler hands in the RayService and the Ray pods from its caches and gets
back the same InferenceState, its reason and message refined.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from controller.api.meta import CONDITION_REASON_PATTERN
from controller.api.pod import LABEL_RAY_CLUSTER, LABEL_RAY_NODE_TYPE, ContainerStatus, Pod
from controller.api.rayservice import APP_RUNNING, RayService
from controller.workspace.inference import InferenceState

# Waiting reasons of a container that is merely on its way (not worth a word).
_ON_ITS_WAY = frozenset({"ContainerCreating", "PodInitializing"})
# Pod reasons quoted as InferenceReady's reason, most telling first (a pod that cannot be placed
# explains everything after it); any other kubelet reason is REASON_POD_FAILING with its word in
# the message, so the condition's reasons stay a known set.
POD_REASONS = ("Unschedulable", "OOMKilled", "CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull",
               "InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError",
               "CreateContainerError", "RunContainerError", "Evicted")
REASON_POD_FAILING = "RayPodFailing"
# a Serve deployment is not healthy and Serve says why (KubeRay's serveDeploymentStatuses[].message)
REASON_SERVE_DEPLOYMENT = "ServeDeploymentNotHealthy"
# fewer worker pods ready than the cluster wants, and no pod or Serve message says more
REASON_WORKERS_NOT_READY = "RayWorkersNotReady"
REASONS = frozenset({*POD_REASONS, REASON_POD_FAILING, REASON_SERVE_DEPLOYMENT,
                     REASON_WORKERS_NOT_READY})  # all Warnings

MAX_PODS = 3  # pods quoted in one message; the rest are counted
SERVE_HEALTHY = "HEALTHY"
_REASON = re.compile(CONDITION_REASON_PATTERN)


@dataclass(frozen=True)
class PodProblem:
    """One Ray pod that is not running, and the upstream words for why."""

    pod: str
    reason: str  # one of REASONS
    message: str  # "pod <name>[ container <c>]: <kubelet reason>: <kubelet message>"
    head: bool = False


def _rank(problem: PodProblem) -> tuple[int, bool, str]:
    order = POD_REASONS.index(problem.reason) if problem.reason in POD_REASONS else len(POD_REASONS)
    return order, not problem.head, problem.pod


def _known(reason: str) -> str:
    return reason if reason in POD_REASONS and _REASON.match(reason) else REASON_POD_FAILING


def _words(reason: str, message: str | None) -> str:
    return f"{reason}: {message}" if message else reason


def _container_problem(c: ContainerStatus) -> tuple[str, str] | None:
    """(reason, words) for a container that is not running as it should, else None."""
    state, last = c.state, c.last_state
    waiting = state.waiting if state else None
    terminated = state.terminated if state and state.terminated else (last.terminated if last else None)
    if terminated is not None and terminated.reason == "OOMKilled":
        restarting = f"; {_words(waiting.reason, waiting.message)}" if waiting and waiting.reason else ""
        return "OOMKilled", (f"OOMKilled: the container ran out of memory (exit code "
                             f"{terminated.exit_code}){restarting}")
    if waiting is None or not waiting.reason or waiting.reason in _ON_ITS_WAY:
        return None
    words = _words(waiting.reason, waiting.message)
    if waiting.reason == "CrashLoopBackOff" and terminated is not None:
        exit_words = _words(terminated.reason or "exited", terminated.message)
        words += f" (last exit code {terminated.exit_code}: {exit_words})"
    return waiting.reason, words


def pod_problem(pod: Pod) -> PodProblem | None:
    """Why ``pod`` is not running, from its status: the scheduler's Unschedulable, a Failed
    phase (Evicted), or a container's (init containers first) waiting or OOMKilled state."""
    st = pod.status
    if st is None:
        return None
    head = pod.label(LABEL_RAY_NODE_TYPE) == "head"
    for cond in st.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False" and cond.reason == "Unschedulable":
            return PodProblem(pod.name, "Unschedulable",
                              f"pod {pod.name}: {_words('Unschedulable', cond.message)}", head)
    if st.phase == "Failed":
        reason = st.reason or "Failed"
        return PodProblem(pod.name, _known(reason), f"pod {pod.name}: {_words(reason, st.message)}", head)
    for c in [*(st.init_container_statuses or []), *(st.container_statuses or [])]:
        found = _container_problem(c)
        if found is not None:
            reason, words = found
            return PodProblem(pod.name, _known(reason), f"pod {pod.name} container {c.name}: {words}", head)
    return None


def cluster_pods(pods: Iterable[dict], rs: RayService | None) -> list[Pod]:
    """The pods of the Ray clusters the RayService names (active and pending); all of them while it
    names none yet. A cluster KubeRay is tearing down after an upgrade is no reason for anything."""
    st = rs.status if rs is not None else None
    clusters = {s.ray_cluster_name for s in (st.active_service_status, st.pending_service_status)
                if s is not None and s.ray_cluster_name} if st else set()
    parsed = [Pod.model_validate(p) for p in pods]
    return [p for p in parsed if not clusters or p.label(LABEL_RAY_CLUSTER) in clusters]


def pod_problems(pods: Iterable[Pod]) -> list[PodProblem]:
    """The pods that are not running, most telling first."""
    return sorted((p for p in map(pod_problem, pods) if p is not None), key=_rank)


def serve_messages(rs: RayService | None) -> list[str]:
    """Ray Serve's own words on each deployment that is not HEALTHY, of every application that is
    not RUNNING (active and pending cluster), as KubeRay copied them from ``serve status``."""
    st = rs.status if rs is not None else None
    if st is None:
        return []
    found: dict[str, str] = {}
    for service in (st.pending_service_status, st.active_service_status):
        for app_name, app in ((service.application_statuses or {}) if service else {}).items():
            if app.status == APP_RUNNING:
                continue
            for dep_name, dep in (app.serve_deployment_statuses or {}).items():
                if dep.message and dep.status != SERVE_HEALTHY:
                    found[f"{app_name}/{dep_name}"] = f"{dep.status or 'UNKNOWN'}: {dep.message}"
    return [f"Ray Serve deployment {name} {words}" for name, words in sorted(found.items())]


def worker_messages(rs: RayService | None) -> list[str]:
    """KubeRay's count of the serving cluster's worker Pods, when fewer are ready than it wants: a
    Ray node lost (its Pod deleted, its container killed) shows here while KubeRay recreates it,
    even where no Pod status says why (``rayClusterStatus.readyWorkerReplicas`` of
    ``desiredWorkerReplicas``). Only the active cluster: a pending one's workers are still starting."""
    active = rs.status.active_service_status if rs is not None and rs.status else None
    cluster = (active.ray_cluster_status or {}) if active else {}
    desired, ready = cluster.get("desiredWorkerReplicas"), cluster.get("readyWorkerReplicas")
    if active is None or not isinstance(desired, int) or not isinstance(ready, int) or ready >= desired:
        return []
    return [f"Ray cluster {active.ray_cluster_name}: {ready} of {desired} worker pods ready"]


def explain(state: InferenceState, rs_obj: dict | None, pods: Iterable[dict]) -> InferenceState:
    """``state`` with the pods' and Serve's words put first in its message and, while it is only
    waiting (not failed, not a spec update being applied), their reason as its reason."""
    if state.ready:
        return state
    rs = RayService.model_validate(rs_obj) if rs_obj is not None else None
    problems = pod_problems(cluster_pods(pods, rs))
    serve = serve_messages(rs)
    workers = worker_messages(rs)
    if not problems and not serve and not workers:
        return state
    details = [p.message for p in problems[:MAX_PODS]]
    if len(problems) > MAX_PODS:
        details.append(f"and {len(problems) - MAX_PODS} more Ray pod(s) not running")
    details += workers + serve
    reason = state.reason
    if not state.failed and state.reason != "RayServiceUpdating":
        reason = problems[0].reason if problems else (
            REASON_SERVE_DEPLOYMENT if serve else REASON_WORKERS_NOT_READY)
    return replace(state, reason=reason, message=f"{'; '.join(details)} ({state.message})")
