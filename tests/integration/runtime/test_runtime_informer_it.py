"""Informers against the real API server: event order, and recovery from a broken watch."""

from __future__ import annotations

import threading
import time
import warnings

import pytest
from rt_helpers import WIDGETS, etcd_compact, install_widget_crd, make_namespace, wait_for, widget

from controller.runtime import Client, DeletedFinalStateUnknown, Gone, Informer, RestClient, object_key

pytestmark = pytest.mark.integration


class Replay:
    """Applies handler calls to a dict, as a consumer would, and keeps the raw event log."""

    def __init__(self, inf: Informer) -> None:
        self.lock = threading.Lock()
        self.state: dict[str, str] = {}  # key -> resourceVersion
        self.log: list[tuple[str, str, str]] = []
        inf.add_event_handler(on_add=self.add, on_update=self.update, on_delete=self.delete)

    def add(self, obj: dict) -> None:
        with self.lock:
            key, rv = object_key(obj), obj["metadata"]["resourceVersion"]
            assert key not in self.state, f"add of {key} that the consumer already has"
            self.state[key] = rv
            self.log.append(("add", key, rv))

    def update(self, old: dict, new: dict) -> None:
        with self.lock:
            key, rv = object_key(new), new["metadata"]["resourceVersion"]
            assert key in self.state, f"update of unknown {key}"
            assert old["metadata"]["resourceVersion"] == self.state[key], "old must be what we were told last"
            self.state[key] = rv
            self.log.append(("update", key, rv))

    def delete(self, obj: dict | DeletedFinalStateUnknown) -> None:
        with self.lock:
            key = object_key(obj)
            assert key in self.state, f"delete of unknown {key}"
            del self.state[key]
            kind = "tombstone" if isinstance(obj, DeletedFinalStateUnknown) else "delete"
            self.log.append((kind, key, ""))


def server_state(client: Client, ns: str) -> dict[str, str]:
    items, _ = client.list(WIDGETS, ns)
    return {object_key(o): o["metadata"]["resourceVersion"] for o in items}


def test_informer_sees_creates_updates_deletes_in_order(rt_client: Client, ns: str):
    inf = Informer(rt_client, WIDGETS, namespace=ns)
    replay = Replay(inf)
    inf.start()
    try:
        assert inf.wait_for_sync(10)
        a = rt_client.create(WIDGETS, widget("a", n=0), ns)
        a1 = rt_client.update(WIDGETS, {**a, "spec": {"n": 1}})
        a2 = rt_client.update(WIDGETS, {**a1, "spec": {"n": 2}})
        b = rt_client.create(WIDGETS, widget("b"), ns)
        rt_client.delete(WIDGETS, "a", ns)
        wait_for(lambda: len(replay.log) == 5, what="5 events")
        rv = lambda o: o["metadata"]["resourceVersion"]  # noqa: E731
        assert replay.log == [
            ("add", f"{ns}/a", rv(a)),
            ("update", f"{ns}/a", rv(a1)),
            ("update", f"{ns}/a", rv(a2)),
            ("add", f"{ns}/b", rv(b)),
            ("delete", f"{ns}/a", ""),
        ]
        assert inf.store.keys() == [f"{ns}/b"]
        assert inf.store.get(f"{ns}/b")["kind"] == "Widget"
        assert int(inf.resource_version) >= int(rv(b))
    finally:
        inf.stop()


def test_informer_recovers_from_apiserver_restart_and_compaction_without_lost_or_duplicated_state(
    fresh_apiserver,  # type: ignore[no-untyped-def]
):
    cp = fresh_apiserver()
    client = RestClient.from_kubeconfig(str(cp.kubeconfig))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")
        install_widget_crd(client)
    ns = make_namespace(client)
    for name in ("a", "b", "c"):
        client.create(WIDGETS, widget(name), ns)

    inf = Informer(client, WIDGETS, namespace=ns, backoff_max=1.0)
    replay = Replay(inf)
    gate_closed = threading.Event()
    in_gate = threading.Event()
    release = threading.Event()

    def gate(old: dict, new: dict) -> None:
        # holds the informer thread so nothing is read from the watch while the server changes
        if gate_closed.is_set() and not release.is_set():
            in_gate.set()
            release.wait(60)

    inf.add_event_handler(on_update=gate)
    inf.start()
    try:
        assert inf.wait_for_sync(10)
        gate_closed.set()
        client.patch(WIDGETS, "c", {"spec": {"touched": True}}, ns)
        assert in_gate.wait(10), "the informer should be inside the gated handler"

        cp.restart_apiserver()  # breaks the open watch
        client.create(WIDGETS, widget("d"), ns)  # missed add
        client.patch(WIDGETS, "a", {"spec": {"changed": 1}}, ns)  # missed update
        client.delete(WIDGETS, "b", ns)  # missed delete
        etcd_compact(cp.etcd_url)  # the informer's last RV is now compacted away: resume gets 410
        with pytest.raises(Gone):
            for _ in client.watch(WIDGETS, ns, resource_version=inf.resource_version, timeout_seconds=5):
                pass
        release.set()

        wait_for(lambda: replay.state == server_state(client, ns), timeout=30, what="cache to converge")
        assert inf.relists >= 1
        assert ("tombstone", f"{ns}/b", "") in replay.log, replay.log
        # no final state was delivered twice: each (key, resourceVersion) appears once
        seen = [(k, rv) for kind, k, rv in replay.log if kind in ("add", "update")]
        assert len(seen) == len(set(seen)), replay.log
        assert {object_key(o): o["metadata"]["resourceVersion"] for o in inf.store.list()} == server_state(
            client, ns
        )

        # and it keeps watching normally afterwards
        e = client.create(WIDGETS, widget("e"), ns)
        wait_for(
            lambda: replay.state.get(f"{ns}/e") == e["metadata"]["resourceVersion"], what="post-recovery add"
        )
    finally:
        release.set()
        inf.stop()
        client.close()


def test_watch_from_a_compacted_resource_version_raises_gone(fresh_apiserver):  # type: ignore[no-untyped-def]
    cp = fresh_apiserver()
    client = RestClient.from_kubeconfig(str(cp.kubeconfig))
    try:
        install_widget_crd(client)
        ns = make_namespace(client)
        _, old_rv = client.list(WIDGETS, ns)
        for i in range(3):
            client.create(WIDGETS, widget(f"w{i}"), ns)
        etcd_compact(cp.etcd_url)
        cp.restart_apiserver()  # the new watch cache starts after the compaction
        t0 = time.monotonic()
        with pytest.raises(Gone) as exc:
            for _ in client.watch(WIDGETS, ns, resource_version=old_rv, timeout_seconds=5):
                pass
        assert exc.value.status == 410
        assert time.monotonic() - t0 < 5
    finally:
        client.close()
