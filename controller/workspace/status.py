"""From what the reconciler observed to the Workspace's status conditions and state.

Pure: ``conditions_for(observation)`` decides every condition from observed facts alone, so the
status is rebuilt from scratch on each reconcile (Kaito's ``syncWorkspaceStatus``) and a restarted
controller writes the same status as the one before it. Reasons are CamelCase words; messages say
what is waited on or what failed, in words a person can act on.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.api.workspace import (
    CONDITION_INFERENCE_READY,
    CONDITION_JOB_STARTED,
    CONDITION_RESOURCE_READY,
    CONDITION_WORKSPACE_READY,
    CONDITION_WORKSPACE_SUCCEEDED,
    ResolvedModelStatus,
    Workspace,
)
from controller.workspace.inference import InferenceState
from controller.workspace.machines import MachineSummary
from controller.workspace.model_resolver import ModelProblem
from controller.workspace.runtime_config import ConfigProblem
from controller.workspace.tuning import JobState

# ResourceReady once the workspace stopped re-creating machines that never became ready
REASON_RELAUNCH_LIMIT = "MachineRelaunchLimitReached"
MAX_MESSAGE = 1024  # keep `kubectl describe` readable; the Event carries the same text


@dataclass
class Observation:
    """Facts gathered by one reconcile, in the order the reconciler gathers them."""

    tuning: bool = False
    invalid: str | None = None  # validation failed: the message
    waiting: tuple[str, str] | None = None  # (reason, message): an input the spec names is not there yet
    plan_error: str | None = None  # the node estimate failed: the message
    model_problem: ModelProblem | None = None  # an uncatalogued model id could not be resolved
    resolved_model: ResolvedModelStatus | None = None  # it was: kept in status (model_record.py)
    plan_message: str = ""  # the estimator's explanation
    machines: MachineSummary | None = None
    inference: InferenceState | None = None
    job: JobState | None = None
    # it served before (state Ready, or already marked degraded): losing readiness now is an
    # outage (NotReady), not a first start (Pending); read from the stored status, so a restarted
    # controller decides the same
    served_before: bool = False

    def hold_for(self, problem: JobState | ConfigProblem) -> None:
        """The tuning or inference config keeps the Machines back: a broken one is a spec problem
        (Failed until fixed), a missing one is waited for (Pending)."""
        if problem.failed:
            self.invalid = problem.message
        else:
            self.waiting = (problem.reason, problem.message)


@dataclass(frozen=True)
class Cond:
    type: str
    status: str
    reason: str
    message: str


def _trim(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def resource_condition(obs: Observation) -> Cond:
    if obs.invalid:
        return Cond(CONDITION_RESOURCE_READY, "False", "InvalidWorkspace", obs.invalid)
    if obs.model_problem:
        return Cond(CONDITION_RESOURCE_READY, "False", obs.model_problem.reason, obs.model_problem.message)
    if obs.plan_error:
        return Cond(CONDITION_RESOURCE_READY, "False", "EstimateFailed", obs.plan_error)
    if obs.waiting:
        return Cond(CONDITION_RESOURCE_READY, "False", *obs.waiting)
    m = obs.machines
    plan = f" {obs.plan_message}" if obs.plan_message else ""
    if m is None:
        return Cond(CONDITION_RESOURCE_READY, "False", "MachinesPending", f"creating machines.{plan}")
    if m.all_ready:
        nodes = f" on nodes {', '.join(m.worker_nodes)}" if m.worker_nodes else ""
        reason = "MachinesReady" if m.provisions else "NodesReady"
        return Cond(CONDITION_RESOURCE_READY, "True", reason, f"{m.describe()}{nodes}.{plan}")
    if not m.provisions:  # --node-provisioner=byo: only existing nodes can come
        return Cond(CONDITION_RESOURCE_READY, "False", "WaitingForNodes", f"{m.describe()}.{plan}")
    if m.gave_up:
        return Cond(CONDITION_RESOURCE_READY, "False", REASON_RELAUNCH_LIMIT, f"{m.describe()}.{plan}")
    reason = "MachineLaunchFailed" if m.failures else "MachinesNotReady"
    return Cond(CONDITION_RESOURCE_READY, "False", reason, f"{m.describe()}.{plan}")


def _blocked(type_: str, resource: Cond) -> Cond:
    reason = "InvalidWorkspace" if resource.reason == "InvalidWorkspace" else "WaitingForResources"
    return Cond(type_, "False", reason, f"waiting for ResourceReady: {resource.message}")


def conditions_for(obs: Observation) -> tuple[list[Cond], str]:
    """Every condition of the workspace, and its ``status.state``."""
    resource = resource_condition(obs)
    failed = resource.reason in ("InvalidWorkspace", "EstimateFailed", "MachineLaunchFailed",
                                 REASON_RELAUNCH_LIMIT)
    failed |= obs.model_problem is not None and obs.model_problem.failed
    if obs.tuning:
        return _tuning_conditions(obs, resource, failed)
    if resource.status != "True":
        inference = _blocked(CONDITION_INFERENCE_READY, resource)
    else:
        st = obs.inference or InferenceState(False, "RayServicePending", "creating the RayService")
        inference = Cond(CONDITION_INFERENCE_READY, "True" if st.ready else "False", st.reason, st.message)
        failed = failed or (obs.inference is not None and obs.inference.failed)
    if resource.status == "True" and inference.status == "True":
        ready = Cond(CONDITION_WORKSPACE_READY, "True", "WorkspaceReady",
                     "resources and inference are ready")
        state = "Ready"
    else:
        blocker = resource if resource.status != "True" else inference
        if failed:
            reason = "WorkspaceFailed"
        elif obs.served_before and inference.reason == "RayServiceUpdating":
            reason = "WorkspaceUpdating"  # a spec change being rolled out is not an outage
        elif obs.served_before:
            reason = "WorkspaceDegraded"
        else:
            reason = "WorkspacePending"
        ready = Cond(CONDITION_WORKSPACE_READY, "False", reason, f"{blocker.type}: {blocker.message}")
        state = "Pending" if reason in ("WorkspacePending", "WorkspaceUpdating") else "NotReady"
    return [resource, inference, ready, succeeded_like(ready)], state


def succeeded_like(ready: Cond) -> Cond:
    """Kaito's own condition for an inference workspace: WorkspaceSucceeded says what WorkspaceReady says.

    Why both: Kaito v0.12 (and scripts written for it: ``kubectl wait --for=condition=
    WorkspaceSucceeded``, its v1beta1 printer columns) know only WorkspaceSucceeded, which Kaito
    sets True once inference is deployed; the seed's users, dashboards and alerts know
    WorkspaceReady (Kaito's name before v0.3). One decision, two names, never apart.
    """
    reason = "WorkspaceSucceeded" if ready.status == "True" else ready.reason
    return Cond(CONDITION_WORKSPACE_SUCCEEDED, ready.status, reason, ready.message)


def served_before(ws: Workspace) -> bool:
    """True once the workspace has been Ready, until it is deleted (degraded or updating stays so)."""
    if ws.status is None:
        return False
    if ws.status.state == "Ready":
        return True
    cond = ws.condition(CONDITION_WORKSPACE_READY)
    return cond is not None and cond.reason in ("WorkspaceDegraded", "WorkspaceUpdating")


def _tuning_conditions(obs: Observation, resource: Cond, failed: bool) -> tuple[list[Cond], str]:
    if resource.status != "True":
        started = _blocked(CONDITION_JOB_STARTED, resource)
        job = None
    else:
        job = obs.job or JobState(False, False, False, "creating the tuning Job")
        started = Cond(CONDITION_JOB_STARTED, "True" if job.started else "False",
                       "JobStarted" if job.started else "JobPending", job.message)
    if job is not None and job.succeeded:
        done = Cond(CONDITION_WORKSPACE_SUCCEEDED, "True", "WorkspaceSucceeded", job.message)
        state = "Succeeded"
    elif failed or (job is not None and job.failed):
        msg = job.message if job is not None and job.failed else f"{resource.type}: {resource.message}"
        done = Cond(CONDITION_WORKSPACE_SUCCEEDED, "False", "WorkspaceFailed", msg)
        state = "Failed"
    else:
        blocker = started if resource.status == "True" else resource
        done = Cond(CONDITION_WORKSPACE_SUCCEEDED, "False", "WorkspacePending",
                    f"{blocker.type}: {blocker.message}")
        state = "Running" if job is not None and job.started else "Pending"
    return [resource, started, done], state


def apply_observation(ws: Workspace, obs: Observation, target_node_count: int | None,
                      worker_nodes: list[str] | None) -> bool:
    """Write the conditions, state, targetNodeCount and workerNodes into ``ws.status``; True if changed."""
    status = ws.ensure_status()
    conds, state = conditions_for(obs)
    changed = False
    for c in conds:
        changed |= ws.set_condition(c.type, c.status, c.reason, _trim(c.message))
    if status.state != state:
        status.state = state  # type: ignore[assignment]
        changed = True
    if target_node_count is not None and status.target_node_count != target_node_count:
        status.target_node_count = target_node_count
        changed = True
    if obs.resolved_model is not None and status.resolved_model != obs.resolved_model:
        status.resolved_model = obs.resolved_model  # never dropped: a later failure keeps the pin
        changed = True
    if worker_nodes is not None and (status.worker_nodes or []) != worker_nodes:
        status.worker_nodes = worker_nodes or None
        changed = True
    return changed
