"""Condition transitions: what the conditions say at each step of a workspace's life."""

from __future__ import annotations

from ws_unit_helpers import workspace

from controller.workspace.inference import InferenceState
from controller.workspace.machines import MachineSummary
from controller.workspace.status import Observation, apply_observation, conditions_for
from controller.workspace.tuning import JobState


def _by_type(obs: Observation) -> tuple[dict, str]:
    conds, state = conditions_for(obs)
    return {c.type: c for c in conds}, state


def test_invalid_spec_blocks_everything_with_the_message() -> None:
    c, state = _by_type(Observation(invalid="unknown preset 'phi-9'"))
    assert c["ResourceReady"].status == "False" and c["ResourceReady"].reason == "InvalidWorkspace"
    assert "phi-9" in c["WorkspaceReady"].message
    assert state == "NotReady"


def test_machines_pending_then_failed_then_ready() -> None:
    m = MachineSummary(desired=2, ready=["m0"], pending=["m1"])
    c, state = _by_type(Observation(machines=m, plan_message="Estimate: 2 nodes."))
    assert c["ResourceReady"].reason == "MachinesNotReady"
    assert (
        "1/2 machines ready" in c["ResourceReady"].message
        and "Estimate: 2 nodes." in c["ResourceReady"].message
    )
    assert c["InferenceReady"].reason == "WaitingForResources" and state == "Pending"

    m.failures = {"m1": "QuotaExceeded: no quota"}
    c, state = _by_type(Observation(machines=m))
    assert c["ResourceReady"].reason == "MachineLaunchFailed" and "no quota" in c["ResourceReady"].message
    assert state == "NotReady"

    m = MachineSummary(desired=2, ready=["m0", "m1"], worker_nodes=["n0", "n1"])
    c, _ = _by_type(
        Observation(machines=m, inference=InferenceState(False, "ServeDeploying", "llm=DEPLOYING"))
    )
    assert c["ResourceReady"].status == "True" and "n0, n1" in c["ResourceReady"].message
    assert c["InferenceReady"].status == "False" and c["WorkspaceReady"].reason == "WorkspacePending"

    c, state = _by_type(Observation(machines=m, inference=InferenceState(True, "InferenceReady", "ok")))
    assert all(x.status == "True" for x in c.values()) and state == "Ready"


def test_tuning_conditions() -> None:
    m = MachineSummary(desired=1, ready=["m0"])
    c, state = _by_type(Observation(tuning=True, machines=m, job=JobState(True, False, False, "running")))
    assert set(c) == {"ResourceReady", "JobStarted", "WorkspaceSucceeded"}
    assert c["JobStarted"].status == "True" and state == "Running"
    c, state = _by_type(Observation(tuning=True, machines=m, job=JobState(True, True, False, "done")))
    assert c["WorkspaceSucceeded"].status == "True" and state == "Succeeded"
    c, state = _by_type(Observation(tuning=True, machines=m, job=JobState(True, False, True, "OOM")))
    assert c["WorkspaceSucceeded"].reason == "WorkspaceFailed" and state == "Failed"


def test_apply_observation_is_idempotent_and_sets_counts() -> None:
    ws = workspace()
    obs = Observation(
        machines=MachineSummary(desired=1, ready=["m0"], worker_nodes=["n0"]),
        inference=InferenceState(True, "InferenceReady", "ok"),
    )
    assert apply_observation(ws, obs, 1, ["n0"])
    assert (
        ws.status.target_node_count == 1 and ws.status.worker_nodes == ["n0"] and ws.status.state == "Ready"
    )
    assert ws.condition("WorkspaceReady").observed_generation == 1
    assert not apply_observation(ws, obs, 1, ["n0"])  # nothing changed -> no status write


def test_losing_readiness_after_ready_is_degraded_not_pending() -> None:
    from controller.workspace.status import served_before

    ws = workspace()
    m = MachineSummary(desired=1, ready=["m0"], worker_nodes=["n0"])
    assert not served_before(ws)
    up = InferenceState(True, "InferenceReady", "ok")
    apply_observation(ws, Observation(machines=m, inference=up), 1, None)
    assert served_before(ws)

    down = InferenceState(False, "ServeNotReady", "waiting for Ray Serve applications: llm=UNHEALTHY")
    apply_observation(ws, Observation(machines=m, inference=down, served_before=served_before(ws)), 1, None)
    cond = ws.condition("WorkspaceReady")
    assert ws.status.state == "NotReady" and cond.reason == "WorkspaceDegraded"
    assert "UNHEALTHY" in cond.message
    assert served_before(ws), "still degraded on the next reconcile, not back to Pending"

    apply_observation(ws, Observation(machines=m, inference=up, served_before=served_before(ws)), 1, None)
    assert ws.status.state == "Ready"


def test_an_update_after_ready_is_updating_not_degraded() -> None:
    from controller.workspace.status import served_before

    ws = workspace()
    m = MachineSummary(desired=1, ready=["m0"], worker_nodes=["n0"])
    up = InferenceState(True, "InferenceReady", "ok")
    apply_observation(ws, Observation(machines=m, inference=up), 1, None)
    rolling = InferenceState(False, "RayServiceUpdating", "waiting for KubeRay to apply generation 2")
    apply_observation(ws, Observation(machines=m, inference=rolling, served_before=True), 1, None)
    assert ws.status.state == "Pending" and ws.condition("WorkspaceReady").reason == "WorkspaceUpdating"
    # the new generation does not come up: that is an outage of a workspace that served before
    broken = InferenceState(False, "ServeDeploying", "llm=DEPLOYING")
    apply_observation(ws, Observation(machines=m, inference=broken, served_before=served_before(ws)), 1, None)
    assert ws.status.state == "NotReady" and ws.condition("WorkspaceReady").reason == "WorkspaceDegraded"


def test_inference_sets_workspace_succeeded_as_kaito_does_beside_workspace_ready() -> None:
    """Kaito v0.12 scripts wait on WorkspaceSucceeded; the seed's on WorkspaceReady: both agree."""
    m = MachineSummary(desired=1, ready=["m0"], worker_nodes=["n0"])
    steps = [
        Observation(machines=MachineSummary(desired=1, pending=["m0"])),
        Observation(machines=m, inference=InferenceState(False, "ServeDeploying", "llm=DEPLOYING")),
        Observation(machines=m, inference=InferenceState(True, "InferenceReady", "ok")),
        Observation(machines=m,
                    inference=InferenceState(False, "ServeApplicationFailed", "boom", failed=True)),
    ]
    for obs in steps:
        c, _ = _by_type(obs)
        assert "JobStarted" not in c
        ready, succeeded = c["WorkspaceReady"], c["WorkspaceSucceeded"]
        assert (succeeded.status, succeeded.message) == (ready.status, ready.message)
        assert succeeded.reason == ("WorkspaceSucceeded" if ready.status == "True" else ready.reason)
