"""Informer decisions on scripted list/watch answers: relist diffing, tombstones, re-watch RVs."""

from __future__ import annotations

import time

from rt_unit_helpers import event, list_calls, obj, scripted, watch_rvs

from controller.runtime import DeletedFinalStateUnknown, Gone, Informer, SharedInformerFactory, object_key
from controller.runtime.fake import FakeClient
from controller.runtime.kinds import CONFIGMAPS


def recorder(inf: Informer) -> list[tuple]:
    log: list[tuple] = []
    inf.add_event_handler(
        on_add=lambda o: log.append(("add", object_key(o), o["metadata"]["resourceVersion"])),
        on_update=lambda old, new: log.append(
            ("update", object_key(new), new["metadata"]["resourceVersion"])
        ),
        on_delete=lambda o: log.append(
            ("tombstone" if isinstance(o, DeletedFinalStateUnknown) else "delete", object_key(o))
        ),
    )
    return log


def run_until_all_watched(client: FakeClient, inf: Informer) -> None:
    inf.start()
    assert inf.wait_for_sync(5)
    assert client.all_watched.wait(5)
    time.sleep(0.05)
    inf.stop()


def test_gone_relists_and_diffs_without_duplicates_and_with_tombstones():
    client = scripted(
        lists=[
            ([obj("a", "1"), obj("b", "1")], "5"),
            ([obj("a", "7"), obj("b", "1"), obj("d", "9")], "20"),  # c vanished; a changed; d new
        ],
        watches=[
            (
                [
                    event("MODIFIED", obj("a", "6")),
                    event("ADDED", obj("c", "7")),
                    {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "10"}}},
                ],
                Gone(410, "Expired", "too old resource version"),
            ),
        ],
    )
    inf = Informer(client, CONFIGMAPS)
    log = recorder(inf)
    run_until_all_watched(client, inf)
    assert log == [
        ("add", "ns/a", "1"),
        ("add", "ns/b", "1"),
        ("update", "ns/a", "6"),
        ("add", "ns/c", "7"),
        ("tombstone", "ns/c"),  # deleted while we were not watching
        ("update", "ns/a", "7"),
        ("add", "ns/d", "9"),  # b unchanged (same RV): no event
    ]
    assert watch_rvs(client) == ["5", "20"]
    assert sorted(inf.store.keys()) == ["ns/a", "ns/b", "ns/d"]
    assert inf.relists == 1


def test_clean_end_of_stream_rewatches_from_last_rv_without_relisting():
    client = scripted(
        lists=[([obj("a", "1")], "5")],
        watches=[
            ([event("MODIFIED", obj("a", "6"))], None),
            ([{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}}], None),
            ([event("DELETED", obj("a", "13"))], None),
        ],
    )
    inf = Informer(client, CONFIGMAPS)
    log = recorder(inf)
    run_until_all_watched(client, inf)
    assert list_calls(client) == 1
    assert watch_rvs(client) == ["5", "6", "12", "13"]
    assert log == [("add", "ns/a", "1"), ("update", "ns/a", "6"), ("delete", "ns/a")]


def test_broken_stream_relists_after_a_backoff():
    client = scripted(
        lists=[([obj("a", "1")], "5"), ([obj("a", "1")], "8")],
        watches=[([], ConnectionResetError("peer gone"))],
    )
    inf = Informer(client, CONFIGMAPS)
    log = recorder(inf)
    run_until_all_watched(client, inf)
    assert list_calls(client) == 2
    assert watch_rvs(client) == ["5", "8"]
    assert log == [("add", "ns/a", "1")], "an unchanged object is not re-announced after a relist"


def test_resync_sends_update_with_the_same_object_and_late_handlers_get_adds():
    client = scripted(lists=[([obj("a", "1"), obj("b", "2")], "5")], watches=[])
    inf = Informer(client, CONFIGMAPS)
    inf.start()
    assert inf.wait_for_sync(5)
    pairs: list[tuple[dict, dict]] = []
    late_adds: list[str] = []
    inf.add_event_handler(
        on_add=lambda o: late_adds.append(object_key(o)), on_update=lambda o, n: pairs.append((o, n))
    )
    assert sorted(late_adds) == ["ns/a", "ns/b"]
    inf.resync()
    inf.stop()
    assert len(pairs) == 2 and all(old is new for old, new in pairs)


def test_periodic_resync_fires_on_its_own():
    client = scripted(lists=[([obj("a", "1")], "5")], watches=[])
    inf = Informer(client, CONFIGMAPS, resync_period=0.05)
    updates: list[str] = []
    inf.add_event_handler(on_update=lambda o, n: updates.append(object_key(n)))
    inf.start()
    time.sleep(0.3)
    inf.stop()
    assert len(updates) >= 2 and set(updates) == {"ns/a"}


def test_a_failing_handler_does_not_stop_the_others():
    client = scripted(lists=[([obj("a", "1")], "5")], watches=[])
    inf = Informer(client, CONFIGMAPS)
    seen: list[str] = []

    def boom(o: dict) -> None:
        raise RuntimeError("handler bug")

    inf.add_event_handler(on_add=boom)
    inf.add_event_handler(on_add=lambda o: seen.append(object_key(o)))
    inf.start()
    assert inf.wait_for_sync(5)
    inf.stop()
    assert seen == ["ns/a"]


def test_the_factory_keeps_one_cache_per_label_selector() -> None:
    """A selected informer (a controller's own pods) is not the kind's whole cache, and is shared."""
    factory = SharedInformerFactory(FakeClient())
    everything = factory.informer(CONFIGMAPS)
    selected = factory.informer(CONFIGMAPS, label_selector="app=x")
    assert selected is not everything and selected.label_selector == "app=x"
    assert factory.informer(CONFIGMAPS, label_selector="app=x") is selected
    assert everything.label_selector is None
