"""The orphan sweep over the one fake client: what is deleted, what is left, and why."""

from __future__ import annotations

import threading

from controller.api.kinds import MACHINES, WORKSPACES
from controller.api.nodeapi import MACHINE_API
from controller.api.workspace import LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE
from controller.runtime import Store
from controller.runtime.fake import FakeClient
from controller.workspace.orphans import OrphanSweeper

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
OLD, NEW = "2027-01-15T07:00:00Z", "2027-01-15T07:59:30Z"


def machine(name: str, ws: str | None, created: str = OLD, **meta: object) -> dict:
    labels = {LABEL_WORKSPACE: ws, LABEL_WORKSPACE_NAMESPACE: "ns"} if ws else {}
    return {"apiVersion": "karpenter.sh/v1alpha5", "kind": "Machine",
            "metadata": {"name": name, "labels": labels, "creationTimestamp": created, **meta}}


def sweeper(client: FakeClient, nodes: list[dict], workspaces: list[dict]) -> OrphanSweeper:
    node_store, ws_store = Store(), Store()
    for obj in nodes:
        client.add(MACHINES, obj)
        node_store.add(obj)
    for ws in workspaces:
        ws_store.add(ws)
    return OrphanSweeper(client, MACHINE_API, node_store, ws_store, grace=300.0, interval=60.0,
                         clock=lambda: NOW)


def _ws(name: str) -> dict:
    return {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
            "metadata": {"name": name, "namespace": "ns"}}


def test_only_old_orphans_of_workspaces_gone_from_cache_and_server_are_deleted() -> None:
    client = FakeClient()
    client.add(WORKSPACES, _ws("not-cached-yet"))  # the cache lags; the authoritative GET finds it
    s = sweeper(client, [
        machine("orphan", "gone"),
        machine("young", "gone", created=NEW),        # inside the grace period
        machine("live", "alive"),                     # its Workspace is in the cache
        machine("lagging", "not-cached-yet"),         # cache says gone, the API server says alive
        machine("foreign", None),                     # no owner labels: not ours
        machine("going", "gone", deletionTimestamp=OLD, finalizers=["karpenter.sh/termination"]),
    ], [_ws("alive")])
    assert s.sweep_once() == ["orphan"]
    left = {o["metadata"]["name"] for o in client.list(MACHINES)[0]}
    assert left == {"young", "live", "lagging", "foreign", "going"}


def test_a_failing_look_does_not_end_the_sweep() -> None:
    client = FakeClient()
    s = sweeper(client, [machine("orphan", "gone")], [])
    calls: list[int] = []
    stop = threading.Event()

    def flaky() -> list[str]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("API server hiccup")
        stop.set()
        return []

    s.interval = 0.01
    s.sweep_once = flaky  # type: ignore[method-assign]
    s.run(stop)
    assert len(calls) == 2
