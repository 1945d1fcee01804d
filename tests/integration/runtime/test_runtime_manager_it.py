"""A controller under a Manager against the real API server: conflicts retried to convergence,
owned objects enqueue their owner, probes and metrics served, the lease released on stop."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

import pytest
from rt_helpers import WIDGETS, wait_for, widget

from controller.runtime import (
    LEASES,
    Client,
    Conflict,
    Controller,
    EventRecorder,
    ItemExponentialFailureRateLimiter,
    Manager,
    Request,
    Result,
)
from controller.runtime.events import EVENTS

pytestmark = pytest.mark.integration


class Labeler:
    """Sets status.children = number of owned widgets, updating with the resourceVersion it read.

    On its first attempt it lets the test change the object between read and write, so the write
    carries a stale resourceVersion and must fail with Conflict; the controller must retry.
    """

    def __init__(self, client: Client, store_of_children) -> None:  # type: ignore[no-untyped-def]
        self.client = client
        self.children = store_of_children
        self.conflicts = 0
        self.attempts = 0
        self.interfere: threading.Event | None = None
        self.lock = threading.Lock()

    def reconcile(self, request: Request) -> Result:
        with self.lock:
            self.attempts += 1
        try:
            parent = self.client.get(WIDGETS, request.name, request.namespace)
        except Exception:
            return Result()
        if self.interfere is not None and not self.interfere.is_set():
            self.interfere.set()  # an outside writer bumps the object after our read
            self.client.patch(WIDGETS, request.name, {"spec": {"outside": True}}, request.namespace)
        n = len(self.children(parent["metadata"]["uid"]))
        parent["status"] = {"children": n}
        try:
            self.client.update_status(WIDGETS, parent)
        except Conflict:
            with self.lock:
                self.conflicts += 1
            raise
        return Result()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_manager_runs_a_controller_that_retries_conflicts_and_serves_probes_and_metrics(
    rt_client: Client, ns: str
):
    mgr = Manager(
        rt_client,
        name="rt-mgr",
        namespace=ns,
        leader_election=True,
        health_port=0,
        metrics_port=0,
        bind_host="127.0.0.1",
        lease_duration=3.0,
        renew_deadline=2.0,
        retry_period=0.25,
    )
    widgets = mgr.informer(WIDGETS, ns)
    assert mgr.informer(WIDGETS, ns) is widgets, "informers are shared per kind"

    rec = Labeler(rt_client, lambda uid: widgets.store.by_index("owner-uid", uid))
    rec.interfere = threading.Event()
    ctrl = Controller("rt-labeler", rec, workers=2, rate_limiter=ItemExponentialFailureRateLimiter(0.05, 1.0))
    ctrl.watch(widgets)
    ctrl.watch_owned(widgets, owner_kind="Widget")
    mgr.add_controller(ctrl)
    ran = threading.Event()
    mgr.add_runnable(lambda stop: (ran.set(), stop.wait()), needs_leader=True)

    parent = rt_client.create(WIDGETS, widget("parent"), ns)
    mgr.start()
    try:
        assert mgr.health_port and mgr.metrics_port and mgr.health_port != mgr.metrics_port
        wait_for(lambda: mgr.is_leader, timeout=10, what="leadership")
        assert ran.wait(5)
        assert get(f"http://127.0.0.1:{mgr.health_port}/healthz")[0] == 200
        assert get(f"http://127.0.0.1:{mgr.health_port}/readyz")[0] == 200

        # the first reconcile hits a stale resourceVersion; the retry converges
        wait_for(
            lambda: (rt_client.get(WIDGETS, "parent", ns).get("status") or {}).get("children") == 0,
            what="status after conflict",
        )
        assert rec.conflicts >= 1
        assert rt_client.get(WIDGETS, "parent", ns)["spec"]["outside"] is True

        # owned objects enqueue their owner
        ref = {
            "apiVersion": "rt.test.kaito.sh/v1",
            "kind": "Widget",
            "name": "parent",
            "uid": parent["metadata"]["uid"],
            "controller": True,
        }
        for i in range(2):
            rt_client.create(
                WIDGETS, {"metadata": {"name": f"child{i}", "ownerReferences": [ref]}, "spec": {}}, ns
            )
        wait_for(
            lambda: (rt_client.get(WIDGETS, "parent", ns).get("status") or {}).get("children") == 2,
            what="owner reconciled for its children",
        )
        wait_for(lambda: ctrl.queue.num_requeues(Request(ns, "parent")) == 0, what="backoff forgotten")

        status, text = get(f"http://127.0.0.1:{mgr.metrics_port}/metrics")
        assert status == 200
        for line in (
            'workqueue_depth{name="rt-labeler"}',
            'workqueue_adds_total{name="rt-labeler"}',
            'workqueue_queue_duration_seconds_bucket{le="1e-08",name="rt-labeler"}',
            'workqueue_work_duration_seconds_count{name="rt-labeler"}',
            'workqueue_retries_total{name="rt-labeler"}',
            'controller_runtime_reconcile_total{controller="rt-labeler",result="success"}',
            'controller_runtime_reconcile_total{controller="rt-labeler",result="error"}',
            'controller_runtime_reconcile_errors_total{controller="rt-labeler"}',
            'controller_runtime_reconcile_time_seconds_count{controller="rt-labeler"}',
            'leader_election_master_status{name="rt-mgr-leader"} 1.0',
        ):
            assert line in text, line
        errors = next(
            ln
            for ln in text.splitlines()
            if ln.startswith('controller_runtime_reconcile_errors_total{controller="rt-l')
        )
        assert float(errors.rsplit(" ", 1)[1]) >= 1
    finally:
        mgr.stop()
    lease = rt_client.get(LEASES, "rt-mgr-leader", ns)
    assert not lease["spec"].get("holderIdentity"), "a stopping manager releases its lease"
    assert not mgr.is_leader


def test_event_recorder_writes_and_aggregates_events(rt_client: Client, ns: str):
    w = rt_client.create(WIDGETS, widget("ev"), ns)
    rec = EventRecorder(rt_client, component="rt-test")
    first = rec.event(w, "Warning", "NoCapacity", "no GPU nodes of that size")
    again = rec.event(w, "Warning", "NoCapacity", "no GPU nodes of that size")
    other = rec.event(w, "Normal", "Provisioned", "2 nodes ready")
    assert first and again and other
    assert again["metadata"]["name"] == first["metadata"]["name"] and again["count"] == 2
    assert other["metadata"]["name"] != first["metadata"]["name"]
    involved = first["involvedObject"]
    assert involved["kind"] == "Widget" and involved["uid"] == w["metadata"]["uid"]
    assert first["source"]["component"] == "rt-test"
    with pytest.raises(ValueError):
        rec.event(w, "Bad", "X", "y")


def test_asynchronous_recorder_writes_in_the_background_and_aggregates(rt_client: Client, ns: str):
    w = rt_client.create(WIDGETS, widget("ev-async"), ns)
    rec = EventRecorder(rt_client, component="rt-async", asynchronous=True)
    try:
        for _ in range(3):
            assert rec.event(w, "Warning", "NoCapacity", "still no GPU nodes") is None  # queued, not written
        rec.event(w, "Normal", "Provisioned", "1 node ready")
        assert rec.flush(10)
        events, _ = rt_client.list(EVENTS, ns, field_selector=f"involvedObject.uid={w['metadata']['uid']}")
        counts = {e["reason"]: e["count"] for e in events}
        assert counts == {"NoCapacity": 3, "Provisioned": 1}, counts
        assert rec.dropped == 0
    finally:
        rec.stop()


def test_only_the_leading_manager_runs_controllers_and_the_standby_takes_over(rt_client: Client, ns: str):
    reconciled: dict[str, list[str]] = {"m1": [], "m2": []}
    managers: dict[str, Manager] = {}
    for ident in ("m1", "m2"):
        mgr = Manager(
            rt_client,
            name="rt-ha",
            namespace=ns,
            identity=ident,
            health_port=None,
            metrics_port=None,
            lease_duration=3.0,
            renew_deadline=2.0,
            retry_period=0.25,
        )
        ctrl = Controller(f"rt-ha-{ident}", lambda req, who=ident: reconciled[who].append(req.name))
        ctrl.watch(mgr.informer(WIDGETS, ns))
        mgr.add_controller(ctrl)
        managers[ident] = mgr
    rt_client.create(WIDGETS, widget("first"), ns)
    managers["m1"].start()
    wait_for(lambda: managers["m1"].is_leader, timeout=10, what="m1 to lead")
    managers["m2"].start()
    try:
        wait_for(lambda: reconciled["m1"] == ["first"], what="m1 reconciles")
        time.sleep(1.0)
        assert not managers["m2"].is_leader and reconciled["m2"] == [], "the standby must not reconcile"

        managers["m1"].stop()
        wait_for(lambda: managers["m2"].is_leader, timeout=3.0, what="m2 to take over")
        rt_client.create(WIDGETS, widget("second"), ns)
        wait_for(lambda: "second" in reconciled["m2"], what="m2 reconciles")
        assert sorted(reconciled["m2"]) == ["first", "second"]
        assert reconciled["m1"] == ["first"]
    finally:
        for mgr in managers.values():
            mgr.stop()
