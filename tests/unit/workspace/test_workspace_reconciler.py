"""The reconciler's decisions over in-memory caches and the runtime's fake client (no server).

The real API semantics are covered by tests/integration/workspace; here: a conflict is a requeue
not a crash, a pass with a stale cache creates nothing twice, and the order of what is created.
"""

from __future__ import annotations

import copy

from controller.api.kinds import WORKSPACES
from controller.api.workspace import LABEL_WORKSPACE
from controller.runtime import Request, Store
from controller.runtime.fake import Call, FakeClient
from controller.workspace import names
from controller.workspace.reconciler import Options, Stores, WorkspaceReconciler

WORKSPACE: dict = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "metadata": {
        "name": "phi",
        "namespace": "ns",
        "uid": "u1",
        "resourceVersion": "1",
        "generation": 1,
        "finalizers": [names.FINALIZER],
    },
    "resource": {
        "instanceType": "Standard_NC12s_v3",
        "count": 2,
        "labelSelector": {"matchLabels": {"a": "b"}},
    },
    "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
}


def _client(live: dict | None = WORKSPACE) -> FakeClient:
    """A fake API server holding ``live``: what a GET of the Workspace answers (None: 404)."""
    client = FakeClient()
    if live is not None:
        client.add(WORKSPACES, copy.deepcopy(live))
    return client


def _reconciler(client: FakeClient) -> tuple[WorkspaceReconciler, Stores]:
    stores = Stores(Store(), Store(), Store(), Store(), Store())
    stores.machines.add_label_index(LABEL_WORKSPACE)
    stores.workspaces.add(copy.deepcopy(WORKSPACE))
    rec = WorkspaceReconciler(
        client, stores, options=Options(), serve_config=lambda ws, plan: "applications: []\n"
    )
    return rec, stores


def test_conflict_on_status_is_a_requeue_and_machines_are_not_created_twice() -> None:
    client = _client()
    client.conflict("update_status", WORKSPACES)
    rec, stores = _reconciler(client)
    result = rec.reconcile(Request("ns", "phi"))
    assert result.requeue  # 409 -> rate-limited requeue, no exception
    creates = [c for c in client.calls if c[0] == "create"]
    assert [c[2] for c in creates] == [names.machine_name("ns", "phi", i) for i in range(2)]
    stores.workspaces.add(client.objects[("workspaces", "ns", "phi")])  # with the launch record
    # the cache has not seen the Machines yet: the next pass tries, gets AlreadyExists, moves on
    result = rec.reconcile(Request("ns", "phi"))
    assert result.requeue_after == Options().machine_poll_seconds
    assert len([k for k in client.objects if k[0] == "machines"]) == 2


def test_ready_machines_lead_to_rayservice_then_service() -> None:
    client = _client()
    rec, stores = _reconciler(client)
    rec.reconcile(Request("ns", "phi"))
    stores.workspaces.add(client.objects[("workspaces", "ns", "phi")])  # the informer catches up
    for i, key in enumerate(k for k in list(client.objects) if k[0] == "machines"):
        m = copy.deepcopy(client.objects[key])
        m["status"] = {
            "nodeName": f"n{i}",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Ready",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        }
        stores.machines.add(m)
    client.calls.clear()
    rec.reconcile(Request("ns", "phi"))
    assert [c[:2] for c in client.calls if c[0] == "create"] == [
        ("create", "rayservices"),
        ("create", "services"),
    ]
    rs = client.objects[("rayservices", "ns", "phi")]
    assert rs["metadata"]["annotations"]["kaito.sh/spec-hash"]
    assert Call("update_status", "workspaces", "phi", "ns") in client.calls


def test_missing_workspace_and_missing_finalizer() -> None:
    client = _client()
    rec, stores = _reconciler(client)
    assert rec.reconcile(Request("ns", "gone")).requeue_after is None and not client.calls
    stores.workspaces.delete("ns/phi")
    ws = copy.deepcopy(WORKSPACE)
    ws["metadata"]["finalizers"] = []
    stores.workspaces.add(ws)
    rec.reconcile(Request("ns", "phi"))
    assert client.calls[0] == Call("patch", "workspaces", "phi", "ns")  # the finalizer comes first


def test_stale_cache_after_deletion_creates_no_machine() -> None:
    """Found by tests/chaos: a pass on a cache that lagged a deletion created a Machine after the
    finalizer was released (an orphan: Machines are cluster-scoped, no ownerReference cleans them)."""
    deleting = {**WORKSPACE["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}
    for live in (None, WORKSPACE | {"metadata": {**WORKSPACE["metadata"], "uid": "u2"}},
                 WORKSPACE | {"metadata": deleting}):
        client = _client(live)  # gone, replaced by a new one of the same name, or being deleted
        rec, _ = _reconciler(client)
        assert rec.reconcile(Request("ns", "phi")).requeue  # look again once the cache has caught up
        assert not [c for c in client.calls if c[0] == "create"]



def test_a_stored_workspace_labelling_nodes_in_a_kubernetes_domain_gets_no_machine() -> None:
    """Stored while no webhook ran: the reconciler runs the same label rules, says so in
    ResourceReady and creates no Machine (which would carry the label onto a Node)."""
    bad = copy.deepcopy(WORKSPACE)
    bad["resource"]["labelSelector"]["matchLabels"] = {"kubernetes.io/hostname": "victim"}
    client = _client(bad)
    rec, stores = _reconciler(client)
    stores.workspaces.add(copy.deepcopy(bad))
    rec.reconcile(Request("ns", "phi"))
    assert not [c for c in client.calls if c[0] == "create"]
    status = client.objects[(WORKSPACES.plural, "ns", "phi")]["status"]
    (rr,) = [c for c in status["conditions"] if c["type"] == "ResourceReady"]
    assert rr["status"] == "False" and "kubernetes.io/hostname" in rr["message"], rr


def _gpu_node(name: str) -> dict:
    return {"metadata": {"name": name, "labels": {"a": "b"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "allocatable": {"nvidia.com/gpu": "2"}}}


def test_a_preferred_node_stands_in_for_a_machine_but_never_idles_one() -> None:
    ws = copy.deepcopy(WORKSPACE)
    ws["resource"]["preferredNodes"] = ["byo-a"]
    client = _client(ws)
    rec, stores = _reconciler(client)
    stores.workspaces.add(copy.deepcopy(ws))
    stores.nodes.add(_gpu_node("byo-a"))
    rec.reconcile(Request("ns", "phi"))
    machines = [k[1:] for k in client.objects if k[0] == "machines"]
    assert machines == [(None, names.machine_name("ns", "phi", 0))]  # the preferred node is the other

    # a preferred node turning up after both Machines exist takes nothing over: they stay in use
    client2 = _client(ws)
    rec2, stores2 = _reconciler(client2)
    stores2.workspaces.add(copy.deepcopy(ws))
    for i in range(2):
        stores2.machines.add({"metadata": {"name": names.machine_name("ns", "phi", i), "labels": {
            LABEL_WORKSPACE: "phi", names.LABEL_WORKSPACE_NAMESPACE: "ns"}}, "spec": {}})
    stores2.nodes.add(_gpu_node("byo-a"))
    rec2.reconcile(Request("ns", "phi"))
    assert not [c for c in client2.calls if c[0] == "create"]
    status = client2.objects[("workspaces", "ns", "phi")]["status"]
    rr = next(c for c in status["conditions"] if c["type"] == "ResourceReady")
    assert "existing nodes used" not in rr["message"] and "0/2 machines ready" in rr["message"]
