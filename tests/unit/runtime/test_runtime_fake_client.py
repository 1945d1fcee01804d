"""The one fake Client keeps the API server's rules that reconcilers rely on, and records calls."""

from __future__ import annotations

import threading

import pytest

from controller.runtime import AlreadyExists, ApiError, Conflict, Informer, NotFound
from controller.runtime.fake import Call, FakeClient, label_selector_matches
from controller.runtime.kinds import CONFIGMAPS, NODES


def cm(name: str, ns: str = "ns", **labels: str) -> dict:
    return {"metadata": {"name": name, "namespace": ns, "labels": labels}, "data": {"k": "v"}}


def test_writes_bump_the_resource_version_and_a_stale_one_conflicts() -> None:
    client = FakeClient()
    created = client.create(CONFIGMAPS, cm("a"))
    assert created["apiVersion"] == "v1" and created["kind"] == "ConfigMap"
    with pytest.raises(AlreadyExists):
        client.create(CONFIGMAPS, cm("a"))
    updated = client.update(CONFIGMAPS, {**created, "data": {"k": "w"}})
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    with pytest.raises(Conflict):
        client.update(CONFIGMAPS, created)  # carries the old resourceVersion
    with pytest.raises(Conflict):
        stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}}
        client.patch(CONFIGMAPS, "a", stale, namespace="ns")
    with pytest.raises(NotFound):
        client.get(CONFIGMAPS, "a", "other-ns")
    assert client.get(CONFIGMAPS, "a", "ns")["data"] == {"k": "w"}
    assert client.delete(CONFIGMAPS, "a", "ns") and not client.delete(CONFIGMAPS, "a", "ns")


def test_update_status_changes_only_the_status_and_patches_merge_json_and_strategic() -> None:
    client = FakeClient()
    node = client.create(
        NODES, {"metadata": {"name": "n1", "finalizers": ["x", "y"]}, "spec": {"taints": [1, 2]}}
    )
    node["spec"] = {}
    node["status"] = {"phase": "Ready"}
    after = client.update_status(NODES, node)
    assert after["spec"] == {"taints": [1, 2]} and after["status"] == {"phase": "Ready"}
    client.patch(NODES, "n1", {"metadata": {"labels": {"a": "1"}}, "spec": {"x": None}})
    status_only = {"spec": {"unschedulable": True}, "status": {"phase": "Gone"}}
    client.patch(NODES, "n1", status_only, subresource="status")
    got = client.get(NODES, "n1")
    assert got["metadata"]["labels"] == {"a": "1"} and "unschedulable" not in got["spec"]
    assert got["status"] == {"phase": "Gone"}
    rv = got["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "replace", "path": "/spec/taints", "value": [2]},
        {"op": "add", "path": "/metadata/labels/b~1c", "value": "2"},
    ]
    client.patch(NODES, "n1", ops, patch_type="json")
    with pytest.raises(Conflict):  # the test op now sees another resourceVersion
        client.patch(NODES, "n1", ops[:1], patch_type="json")
    drop_x = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}
    client.patch(NODES, "n1", drop_x, patch_type="strategic")
    got = client.get(NODES, "n1")
    assert got["spec"]["taints"] == [2] and got["metadata"]["labels"]["b/c"] == "2"
    assert got["metadata"]["finalizers"] == ["y"]


def test_delete_with_finalizers_waits_for_the_last_one() -> None:
    client = FakeClient()
    client.create(CONFIGMAPS, {**cm("a"), "metadata": {**cm("a")["metadata"], "finalizers": ["f"]}})
    assert client.delete(CONFIGMAPS, "a", "ns")
    deleting = client.get(CONFIGMAPS, "a", "ns")
    assert deleting["metadata"]["deletionTimestamp"]
    client.patch(CONFIGMAPS, "a", {"metadata": {"finalizers": []}}, namespace="ns")
    assert ("configmaps", "ns", "a") not in client.objects


def test_list_selects_by_namespace_labels_and_fields() -> None:
    client = FakeClient()
    client.create(CONFIGMAPS, cm("a", app="x", tier="web"))
    client.create(CONFIGMAPS, cm("b", app="y"))
    client.create(CONFIGMAPS, cm("c", ns="other", app="x"))

    def names(**kw: str) -> list[str]:
        return [o["metadata"]["name"] for o in client.list(CONFIGMAPS, **kw)[0]]

    assert names() == ["a", "b", "c"] and names(namespace="ns") == ["a", "b"]
    assert names(label_selector="app=x") == ["a", "c"]
    assert names(label_selector="app=x,tier") == ["a"]
    assert names(label_selector="app!=x") == ["b"]
    assert names(label_selector="app in (y, z),!tier") == ["b"]
    assert names(field_selector="metadata.name=c") == ["c"]
    assert not label_selector_matches("app notin (x)", {"app": "x"})


def test_calls_are_recorded_and_injected_errors_fire_the_given_number_of_times() -> None:
    client = FakeClient()
    client.add(CONFIGMAPS, cm("a"))  # a fixture: not a call
    client.conflict("update_status", CONFIGMAPS, times=2)
    client.fail("get", ApiError(500, "InternalError", "etcd is down"), name="a")
    with pytest.raises(ApiError) as err:
        client.get(CONFIGMAPS, "a", "ns")
    assert err.value.status == 500
    obj = client.get(CONFIGMAPS, "a", "ns")  # once only
    for _ in range(2):
        with pytest.raises(Conflict):
            client.update_status(CONFIGMAPS, obj)
    client.update_status(CONFIGMAPS, obj)  # the third goes through
    assert client.calls == [
        Call("get", "configmaps", "a", "ns"),
        Call("get", "configmaps", "a", "ns"),
        *[Call("update_status", "configmaps", "a", "ns")] * 3,
    ]
    client.fail("*", NotFound(404, "NotFound", "x"), times=None)
    for _ in range(3):
        with pytest.raises(NotFound):
            client.list(NODES)
    assert [c.verb for c in client.calls_of("list", NODES)] == ["list"] * 3


def test_an_informer_over_the_fake_sees_its_writes() -> None:
    client = FakeClient()
    client.create(CONFIGMAPS, cm("a"))
    inf = Informer(client, CONFIGMAPS, namespace="ns")
    seen: list[tuple[str, str]] = []
    got_delete = threading.Event()
    inf.add_event_handler(
        on_add=lambda o: seen.append(("add", o["metadata"]["name"])),
        on_update=lambda old, new: seen.append(("update", new["metadata"]["name"])),
        on_delete=lambda o: (seen.append(("delete", o["metadata"]["name"])), got_delete.set()),
    )
    inf.start()
    try:
        assert inf.wait_for_sync(5) and client.all_watched.wait(5)
        client.create(CONFIGMAPS, cm("b"))
        client.create(CONFIGMAPS, cm("elsewhere", ns="other"))
        client.patch(CONFIGMAPS, "a", {"data": {"k": "2"}}, namespace="ns")
        client.delete(CONFIGMAPS, "b", "ns")
        assert got_delete.wait(5)
    finally:
        inf.stop()
    assert seen == [("add", "a"), ("add", "b"), ("update", "a"), ("delete", "b")]
