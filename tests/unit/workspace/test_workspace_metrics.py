"""The workspace gauges are read from the cache at scrape time, so a reconcile pass does no O(N) work.

Before: every reconcile recounted every cached Workspace (found by hack/bench/controller_scale:
O(N^2) pydantic parses for N workspaces).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from controller.runtime import Store
from controller.workspace.metrics import facts, register_collector


def _ws(i: int, state: str | None = None, preset: str = "phi-3-mini-4k-instruct", **meta: str) -> dict:
    obj: dict = {
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
        "metadata": {"name": f"count-{i}", "namespace": "count-ns", "uid": f"u{i}", **meta},
        "resource": {"instanceType": "Standard_NC12s_v3"},
        "inference": {"preset": {"name": preset}},
    }
    if state:
        obj["status"] = {"state": state, "conditions": [
            {"type": "WorkspaceReady", "status": "True" if state == "Ready" else "False"}]}
    return obj


def test_counts_and_readiness_come_from_the_cache_when_scraped() -> None:
    store, registry = Store(), CollectorRegistry()
    for i in range(50):
        store.add(_ws(i))
    register_collector(store.list, registry)
    assert registry.get_sample_value("kaito_workspace_count", {"phase": "pending"}) == 50
    assert registry.get_sample_value("kaito_workspace_count", {"phase": "ready"}) == 0

    store.update(_ws(7, state="Ready"))
    store.update(_ws(9, state="NotReady", preset="phi-3-medium-4k-instruct"))
    store.update(_ws(10, deletionTimestamp="2026-01-01T00:00:00Z"))
    store.delete("count-ns/count-8")
    sample = registry.get_sample_value
    assert sample("kaito_workspace_count", {"phase": "ready"}) == 1
    assert sample("kaito_workspace_count", {"phase": "pending"}) == 46
    assert sample("kaito_workspace_count", {"phase": "deleting"}) == 1
    assert sample("kaito_workspace_preset_count", {"preset_name": "phi-3-mini-4k-instruct"}) == 48
    ready = {"namespace": "count-ns", "name": "count-7", "condition": "WorkspaceReady"}
    assert sample("kaito_workspace_ready", ready) == 1
    assert sample("kaito_workspace_ready", {**ready, "name": "count-9"}) == 0

    # a workspace that goes takes its readiness series with it; its preset's count drops to 0
    store.delete("count-ns/count-9")
    assert sample("kaito_workspace_ready", {**ready, "name": "count-9"}) is None
    assert sample("kaito_workspace_preset_count", {"preset_name": "phi-3-medium-4k-instruct"}) == 0


def test_a_second_registration_replaces_the_first() -> None:
    registry = CollectorRegistry()
    first, second = Store(), Store()
    first.add(_ws(1))
    register_collector(first.list, registry)
    register_collector(second.list, registry)  # another Manager in the same process: no duplicate error
    assert registry.get_sample_value("kaito_workspace_count", {"phase": "pending"}) == 0


def test_facts_of_odd_objects() -> None:
    template = {"metadata": {"name": "t"}, "inference": {"template": {}}}
    assert facts(template).preset == "template" and facts(template).phase == "pending"
    tuning = {"metadata": {"name": "t"}, "tuning": {"preset": {"name": "p"}}, "status": {"state": "Running"}}
    assert facts(tuning).preset == "p" and facts(tuning).phase == "running"
