"""The cold-start timeline: phase ends from the objects' own times, recorded once, in order."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY
from test_workspace_compat import _running_rayservice
from test_workspace_reconciler import WORKSPACE

from controller.api.kinds import RAYSERVICES, WORKSPACES
from controller.api.workspace import INFERENCE_PHASES, LABEL_WORKSPACE, PhaseEnd, Workspace
from controller.runtime import Request, Store
from controller.runtime.fake import FakeClient
from controller.workspace import timeline
from controller.workspace.machines import build_machine
from controller.workspace.reconciler import Options, Stores, WorkspaceReconciler

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)  # within the probe window


def _at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _machine(i: int, created: float, ready: float | None) -> dict:
    m = {"metadata": {"name": f"m{i}", "creationTimestamp": _at(created)}}
    if ready is not None:
        m["status"] = {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": _at(ready)}]}
    return m


def test_machine_ends_wait_for_every_machine() -> None:
    assert timeline.machine_ends([_machine(0, 1, 5)], desired=2) == {}
    ends = timeline.machine_ends([_machine(0, 1, 5), _machine(1, 2, None)], desired=2)
    assert ends == {"NodesCreated": T0 + timedelta(seconds=2)}
    ends = timeline.machine_ends([_machine(0, 1, 5), _machine(1, 2, 9)], desired=2)
    assert ends["NodesReady"] == T0 + timedelta(seconds=9)


def test_rayservice_ends_read_what_kuberay_copies_from_serve() -> None:
    now = T0 + timedelta(seconds=99)
    status = {"lastUpdateTime": _at(30), "pendingServiceStatus": {
        "rayClusterStatus": {"state": "ready"},
        "applicationStatuses": {"llm": {"status": "DEPLOYING",
                                        "serveDeploymentStatuses": {"LLMServer": {"status": "UPDATING"}}}}}}
    assert timeline.rayservice_ends({"status": status}, now) == {"RayClusterUp": T0 + timedelta(seconds=30)}
    status["pendingServiceStatus"]["applicationStatuses"]["llm"]["serveDeploymentStatuses"]["LLMServer"] = {
        "status": "HEALTHY"}
    assert timeline.rayservice_ends({"status": status}, now)["WeightsLoaded"] == T0 + timedelta(seconds=30)
    assert timeline.rayservice_ends(None, now) == {}


def test_advance_records_in_order_once_and_monotone() -> None:
    phases = INFERENCE_PHASES
    seen = {"NodesCreated": T0 + timedelta(seconds=1), "NodesReady": T0 + timedelta(seconds=4)}
    first = timeline.advance([], seen, phases, T0)
    assert [(p.phase, p.seconds) for p in first] == [("NodesCreated", 1.0), ("NodesReady", 3.0)]
    # a later pass sees other times for recorded phases: they do not move; a phase seen only
    # through a later one (no cluster state reported) ends with it
    seen = {"NodesCreated": T0 + timedelta(seconds=50), "WeightsLoaded": T0 + timedelta(seconds=10)}
    second = timeline.advance(first, seen, phases, T0)
    assert second[:2] == first
    assert [(p.phase, p.seconds) for p in second[2:]] == [("RayClusterUp", 6.0), ("WeightsLoaded", 0.0)]
    assert timeline.new_phases(first, second) == second[2:]
    # an end before the previous phase's is clamped to it
    late = timeline.advance(second, {"FirstRequestAnswered": T0}, phases, T0)
    assert late[-1].seconds == 0.0 and late[-1].ended_at == second[-1].ended_at


def _stack(ws_obj: dict, machines_ready: bool, rs: dict | None) -> tuple[FakeClient, Stores]:
    client = FakeClient()
    client.add(WORKSPACES, copy.deepcopy(ws_obj))
    stores = Stores(Store(), Store(), Store(), Store(), Store())
    stores.machines.add_label_index(LABEL_WORKSPACE)
    stores.workspaces.add(copy.deepcopy(ws_obj))
    ws = Workspace.model_validate(ws_obj)
    for i in range(2):
        machine = build_machine(ws, i, "Standard_NC12s_v3", None)
        machine["metadata"]["creationTimestamp"] = _at(1 + i)
        if machines_ready:
            machine["status"] = {"nodeName": f"n{i}", "conditions": [
                {"type": "Ready", "status": "True", "reason": "Ready", "lastTransitionTime": _at(8)}]}
        stores.machines.add(machine)
    if rs is not None:
        stores.rayservices.add(rs)
        client.add(RAYSERVICES, copy.deepcopy(rs))
    return client, stores


def test_the_reconciler_records_phases_asks_once_and_observes_histograms() -> None:
    obj = {**copy.deepcopy(WORKSPACE), "metadata": {**WORKSPACE["metadata"], "creationTimestamp": _at(0)}}
    ws = Workspace.model_validate(obj)
    rs = _running_rayservice(ws)
    rs["status"]["lastUpdateTime"] = _at(20)
    rs["status"]["activeServiceStatus"]["rayClusterStatus"] = {"state": "ready"}
    rs["status"]["activeServiceStatus"]["applicationStatuses"]["llm"]["serveDeploymentStatuses"] = {
        "LLMServer": {"status": "HEALTHY"}}
    asked: list[tuple[str, str]] = []
    answers = iter([False, True])

    def prober(url: str, model: str) -> bool:
        asked.append((url, model))
        return next(answers)

    client, stores = _stack(obj, True, rs)
    # T0 is fixed at import, and a whole-suite run reaches this test many minutes later: a window
    # that cannot lapse keeps "within the window" true however long collection took
    rec = WorkspaceReconciler(client, stores,
                              options=Options(first_request_url="service", first_request_window_seconds=1e9),
                              serve_config=lambda ws, plan: "applications: []\n", prober=prober)
    labels = {"phase": "WeightsLoaded", "preset_name": "phi-3-mini-4k-instruct"}
    before = REGISTRY.get_sample_value("kaito_workspace_phase_seconds_count", labels) or 0
    result = rec.reconcile(Request("ns", "phi"))
    stored = Workspace.model_validate(client.objects[("workspaces", "ns", "phi")])
    assert [p.phase for p in stored.status.timeline] == list(INFERENCE_PHASES[:4])
    assert result.requeue_after == Options().first_request_poll_seconds  # not answered yet: ask again
    assert asked == [("http://phi.ns.svc:80", "phi-3-mini-4k-instruct")]
    after = REGISTRY.get_sample_value("kaito_workspace_phase_seconds_count", labels)
    assert after == before + 1

    stores.workspaces.add(client.objects[("workspaces", "ns", "phi")])  # the informer catches up
    rec.reconcile(Request("ns", "phi"))
    stored = Workspace.model_validate(client.objects[("workspaces", "ns", "phi")])
    assert [p.phase for p in stored.status.timeline] == list(INFERENCE_PHASES)
    assert [p.seconds for p in stored.status.timeline[:4]] == [2.0, 6.0, 12.0, 0.0]
    stores.workspaces.add(client.objects[("workspaces", "ns", "phi")])
    client.calls.clear()
    rec.reconcile(Request("ns", "phi"))
    assert len(asked) == 2 and not [c for c in client.calls if c[0] == "update_status"]  # complete: quiet


def test_no_probe_when_off_and_no_timeline_for_a_workspace_that_served_before() -> None:
    old = {**copy.deepcopy(WORKSPACE), "status": {"state": "Ready"}}
    ws = Workspace.model_validate(old)
    client, stores = _stack(old, True, _running_rayservice(ws))
    rec = WorkspaceReconciler(client, stores, options=Options(),
                              serve_config=lambda ws, plan: "applications: []\n",
                              prober=lambda url, model: (_ for _ in ()).throw(AssertionError("asked")))
    rec.reconcile(Request("ns", "phi"))
    assert Workspace.model_validate(client.objects[("workspaces", "ns", "phi")]).status.timeline is None
    assert PhaseEnd(phase="NodesReady", ended_at=_at(1), seconds=1).to_k8s() == {
        "phase": "NodesReady", "endedAt": _at(1), "seconds": 1.0}


def _cold_start() -> list[PhaseEnd]:
    seen = {p: T0 + timedelta(seconds=10 * (i + 1)) for i, p in enumerate(INFERENCE_PHASES)}
    return timeline.advance([], seen, INFERENCE_PHASES, T0)


def test_restarts_record_the_latest_interruption_and_reload_with_counts() -> None:
    cold = _cold_start()
    assert timeline.restarts(cold, True, T0 + timedelta(seconds=60)) == cold  # serving: nothing new
    assert timeline.restarts(cold, None, T0 + timedelta(seconds=60)) == cold  # nothing reported
    assert timeline.restarts(cold[:3], False, T0 + timedelta(seconds=60)) == cold[:3]  # never loaded yet
    down = timeline.restarts(cold, False, T0 + timedelta(seconds=100))
    assert down[:5] == cold
    assert (down[5].phase, down[5].seconds, down[5].count) == ("ServingInterrupted", 60.0, 1)
    assert timeline.parse_time(down[5].ended_at) == T0 + timedelta(seconds=100)
    assert timeline.restarts(down, False, T0 + timedelta(seconds=105)) == down  # still down: it stays
    back = timeline.restarts(down, True, T0 + timedelta(seconds=107.5))
    assert [(p.phase, p.seconds, p.count) for p in back[5:]] == [
        ("ServingInterrupted", 60.0, 1), ("WeightsReloaded", 7.5, 1)]
    assert timeline.new_phases(down, back) == back[6:]  # the reload is observed, the interruption not
    assert timeline.new_phases(cold, down) == []
    # a second restart replaces both entries in place (one entry per phase: a list keyed by phase)
    again = timeline.restarts(timeline.restarts(back, False, T0 + timedelta(seconds=200)), True,
                              T0 + timedelta(seconds=203))
    assert [(p.phase, p.seconds, p.count) for p in again[5:]] == [
        ("ServingInterrupted", 92.5, 2), ("WeightsReloaded", 3.0, 2)]
    assert timeline.new_phases(back, again) == again[6:]
    # a status stamped before the last load (clocks) is clamped: no negative durations
    clamped = timeline.restarts(cold, False, T0)
    assert clamped[5].seconds == 0.0 and clamped[5].ended_at == cold[3].ended_at


def test_serving_reads_healthy_deployments_and_ignores_an_unreported_status() -> None:
    now = T0 + timedelta(seconds=5)
    assert timeline.serving(None, now) == (None, now)
    assert timeline.serving({"status": {}}, now) == (None, now)

    def rs(active: str, pending: str | None = None) -> dict:
        def service(state: str) -> dict:
            deployments = {"LLMServer": {"status": state}}
            return {"applicationStatuses": {"llm": {"serveDeploymentStatuses": deployments}}}
        status = {"lastUpdateTime": _at(3), "activeServiceStatus": service(active)}
        if pending:
            status["pendingServiceStatus"] = service(pending)
        return {"status": status}

    assert timeline.serving(rs("UNHEALTHY"), now) == (False, T0 + timedelta(seconds=3))
    assert timeline.serving(rs("HEALTHY"), now) == (True, T0 + timedelta(seconds=3))
    assert timeline.serving(rs("HEALTHY", pending="UPDATING"), now)[0] is True  # the active one serves


def test_the_reconciler_records_a_restart_after_the_cold_start_and_observes_the_reload() -> None:
    obj = {**copy.deepcopy(WORKSPACE), "metadata": {**WORKSPACE["metadata"], "creationTimestamp": _at(0)}}
    obj["status"] = {"state": "Ready", "timeline": [p.to_k8s() for p in _cold_start()]}
    ws = Workspace.model_validate(obj)
    rs = _running_rayservice(ws)
    deployment = {"status": "UNHEALTHY", "message": "replica died"}
    rs["status"]["lastUpdateTime"] = _at(70)
    rs["status"]["activeServiceStatus"]["applicationStatuses"]["llm"]["serveDeploymentStatuses"] = {
        "LLMServer": deployment}
    client, stores = _stack(obj, True, rs)
    rec = WorkspaceReconciler(client, stores, options=Options(),
                              serve_config=lambda ws, plan: "applications: []\n",
                              prober=lambda url, model: (_ for _ in ()).throw(AssertionError("asked")))
    labels = {"phase": "WeightsReloaded", "preset_name": "phi-3-mini-4k-instruct"}
    before = REGISTRY.get_sample_value("kaito_workspace_phase_seconds_count", labels) or 0
    rec.reconcile(Request("ns", "phi"))
    stored = client.objects[("workspaces", "ns", "phi")]
    entries = [(p["phase"], p.get("count")) for p in stored["status"]["timeline"][5:]]
    assert entries == [("ServingInterrupted", 1)]

    stores.workspaces.add(stored)
    deployment["status"] = "HEALTHY"
    rs["status"]["lastUpdateTime"] = _at(74)
    stores.rayservices.add(rs)
    rec.reconcile(Request("ns", "phi"))
    stored = client.objects[("workspaces", "ns", "phi")]
    reload = stored["status"]["timeline"][-1]
    assert (reload["phase"], reload["seconds"], reload["count"]) == ("WeightsReloaded", 4.0, 1)
    assert REGISTRY.get_sample_value("kaito_workspace_phase_seconds_count", labels) == before + 1
    stores.workspaces.add(stored)
    client.calls.clear()
    rec.reconcile(Request("ns", "phi"))  # nothing changed: no write, no second observation
    assert not [c for c in client.calls if c[0] == "update_status"]
    assert REGISTRY.get_sample_value("kaito_workspace_phase_seconds_count", labels) == before + 1
