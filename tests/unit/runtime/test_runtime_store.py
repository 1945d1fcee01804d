"""The indexed store: indexes follow every add/update/delete/replace."""

from __future__ import annotations

import pytest

from controller.runtime import DeletedFinalStateUnknown, Store, object_key, split_key


def obj(
    name: str, ns: str | None = "ns1", labels: dict | None = None, owners: list[str] | None = None
) -> dict:
    meta: dict = {"name": name, "labels": labels or {}}
    if ns:
        meta["namespace"] = ns
    if owners:
        meta["ownerReferences"] = [{"uid": u, "kind": "Workspace", "name": f"o-{u}"} for u in owners]
    return {"metadata": meta}


def names(objs: list[dict]) -> list[str]:
    return sorted(o["metadata"]["name"] for o in objs)


def test_object_key_and_split_key():
    assert object_key(obj("a")) == "ns1/a"
    assert object_key(obj("n", ns=None)) == "n"
    assert object_key(DeletedFinalStateUnknown("x/y", None)) == "x/y"
    assert split_key("ns1/a") == ("ns1", "a")
    assert split_key("n") == (None, "n")
    with pytest.raises(ValueError):
        object_key({"metadata": {}})


def test_namespace_and_owner_indexes():
    s = Store()
    s.add(obj("a", owners=["u1"]))
    s.add(obj("b", owners=["u1", "u2"]))
    s.add(obj("c", ns="ns2"))
    assert names(s.by_index("namespace", "ns1")) == ["a", "b"]
    assert names(s.by_index("namespace", "ns2")) == ["c"]
    assert names(s.by_index("owner-uid", "u1")) == ["a", "b"]
    assert names(s.by_index("owner-uid", "u2")) == ["b"]
    assert s.by_index("owner-uid", "nope") == []


def test_label_index_follows_updates_and_deletes():
    s = Store()
    s.add(obj("a", labels={"kaito.sh/workspace": "w1"}))
    name = s.add_label_index("kaito.sh/workspace")  # existing objects are indexed too
    s.add(obj("b", labels={"kaito.sh/workspace": "w1"}))
    assert names(s.by_index(name, "w1")) == ["a", "b"]
    assert names(s.by_index("label:kaito.sh/workspace", "w1")) == ["a", "b"]
    old = s.update(obj("a", labels={"kaito.sh/workspace": "w2"}))
    assert old is not None and old["metadata"]["labels"]["kaito.sh/workspace"] == "w1"
    assert names(s.by_index(name, "w1")) == ["b"]
    assert names(s.by_index(name, "w2")) == ["a"]
    assert s.delete("ns1/b") is not None
    assert s.by_index(name, "w1") == []
    assert s.delete("ns1/b") is None
    assert s.index_keys(name, "w2") == ["ns1/a"]


def test_replace_rebuilds_content_and_indexes():
    s = Store()
    s.add_label_index("app")
    s.add(obj("a", labels={"app": "x"}))
    s.replace([obj("b", labels={"app": "x"}), obj("c", ns="ns2")])
    assert sorted(s.keys()) == ["ns1/b", "ns2/c"]
    assert names(s.by_index("app", "x")) == ["b"]
    assert s.get("ns1/a") is None and "ns1/b" in s and len(s) == 2
    assert s.get_by_name("ns2", "c") is not None


def test_unknown_index_raises():
    with pytest.raises(KeyError):
        Store().by_index("nope", "x")
