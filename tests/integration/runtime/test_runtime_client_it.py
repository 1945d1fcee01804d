"""Client against the real API server: paths for CRDs and core kinds, typed errors, patches, watch."""

from __future__ import annotations

import pytest
from rt_helpers import NAMESPACES, WIDGETS, widget

from controller.runtime import AlreadyExists, Client, Conflict, NotFound
from controller.runtime.kinds import CONFIGMAPS

pytestmark = pytest.mark.integration



def test_crud_on_a_crd_with_typed_errors(rt_client: Client, ns: str):
    created = rt_client.create(WIDGETS, widget("w1", size=1), ns)
    assert created["kind"] == "Widget" and created["metadata"]["namespace"] == ns
    with pytest.raises(AlreadyExists):
        rt_client.create(WIDGETS, widget("w1"), ns)
    with pytest.raises(NotFound):
        rt_client.get(WIDGETS, "nope", ns)

    fresh = rt_client.update(WIDGETS, {**created, "spec": {"size": 2}})
    assert fresh["spec"]["size"] == 2
    assert fresh["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    with pytest.raises(Conflict) as exc:
        rt_client.update(WIDGETS, {**created, "spec": {"size": 3}})  # stale resourceVersion
    assert exc.value.status == 409 and exc.value.reason == "Conflict"

    with_status = rt_client.update_status(
        WIDGETS, {**fresh, "status": {"phase": "Ready"}, "spec": {"size": 99}}
    )
    assert with_status["status"] == {"phase": "Ready"}
    assert with_status["spec"]["size"] == 2, "the status subresource ignores spec"

    merged = rt_client.patch(WIDGETS, "w1", {"spec": {"color": "red"}}, ns)
    assert merged["spec"] == {"size": 2, "color": "red"}
    patched = rt_client.patch(
        WIDGETS, "w1", [{"op": "replace", "path": "/spec/size", "value": 5}], ns, "json"
    )
    assert patched["spec"]["size"] == 5
    st = rt_client.patch(WIDGETS, "w1", {"status": {"phase": "Done"}}, ns, subresource="status")
    assert st["status"]["phase"] == "Done"

    rt_client.create(WIDGETS, {"metadata": {"name": "w2", "labels": {"tier": "gold"}}, "spec": {}}, ns)
    items, rv = rt_client.list(WIDGETS, ns, label_selector="tier=gold")
    assert [i["metadata"]["name"] for i in items] == ["w2"] and rv
    assert items[0]["apiVersion"] == "rt.test.kaito.sh/v1" and items[0]["kind"] == "Widget"

    assert rt_client.delete(WIDGETS, "w1", ns) is True
    assert rt_client.delete(WIDGETS, "w1", ns) is False
    with pytest.raises(NotFound):
        rt_client.get(WIDGETS, "w1", ns)


def test_core_kinds_cluster_scoped_and_strategic_patch(rt_client: Client, ns: str):
    got = rt_client.get(NAMESPACES, ns)
    assert got["metadata"]["name"] == ns
    cm = rt_client.create(CONFIGMAPS, {"metadata": {"name": "c", "namespace": ns}, "data": {"a": "1"}})
    assert cm["data"] == {"a": "1"}
    out = rt_client.patch(CONFIGMAPS, "c", {"data": {"b": "2"}}, ns, patch_type="strategic")
    assert out["data"] == {"a": "1", "b": "2"}
    items, _ = rt_client.list(NAMESPACES, field_selector=f"metadata.name={ns}")
    assert [i["metadata"]["name"] for i in items] == [ns]


def test_list_pages_with_continue(rt_client: Client, ns: str):
    for i in range(5):
        rt_client.create(CONFIGMAPS, {"metadata": {"name": f"p{i}"}}, ns)
    items, _ = rt_client.list(CONFIGMAPS, ns, limit=2)
    assert sorted(i["metadata"]["name"] for i in items) == [f"p{i}" for i in range(5)]


def test_watch_streams_events_from_a_resource_version(rt_client: Client, ns: str):
    _, rv = rt_client.list(WIDGETS, ns)
    rt_client.create(WIDGETS, widget("a"), ns)
    rt_client.patch(WIDGETS, "a", {"spec": {"x": 1}}, ns)
    rt_client.delete(WIDGETS, "a", ns)
    stream = rt_client.watch(WIDGETS, ns, resource_version=rv, timeout_seconds=5)
    seen = []
    for ev in stream:
        if ev["type"] != "BOOKMARK":
            seen.append((ev["type"], ev["object"]["metadata"]["name"]))
        if len(seen) == 3:
            stream.close()
            break
    assert seen == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
