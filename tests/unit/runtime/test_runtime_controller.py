"""Controller result handling and event mapping (pure logic: scripted informer input)."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

from prometheus_client import REGISTRY
from rt_unit_helpers import obj, scripted

from controller.runtime import (
    Controller,
    Informer,
    ItemExponentialFailureRateLimiter,
    Request,
    Result,
)
from controller.runtime.kinds import CONFIGMAPS
from controller.runtime.probes import ProbeServer


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def fast(name: str, reconciler, workers: int = 1) -> Controller:  # type: ignore[no-untyped-def]
    return Controller(
        name, reconciler, workers=workers, rate_limiter=ItemExponentialFailureRateLimiter(0.02, 1)
    )


def test_request_key():
    assert Request("ns", "a").key == "ns/a"
    assert Request(None, "node-1").key == "node-1"
    assert Request.from_object(obj("a", "1")) == Request("ns", "a")


def test_error_requeues_with_backoff_and_success_forgets():
    calls: list[Request] = []

    def reconcile(req: Request) -> Result:
        calls.append(req)
        if len(calls) < 3:
            raise RuntimeError("transient")
        return Result()

    ctrl = fast("t-ctrl-error", reconcile)
    req = Request("ns", "a")
    assert ctrl.process(req) == "error"
    assert ctrl.queue.num_requeues(req) == 1
    assert len(ctrl.queue) == 0, "retried only after the backoff"
    item, _ = ctrl.queue.get()
    assert item == req
    assert ctrl.process(item) == "error"
    ctrl.queue.done(item)
    assert ctrl.queue.num_requeues(req) == 2
    item, _ = ctrl.queue.get()
    assert ctrl.process(item) == "success"
    ctrl.queue.done(item)
    assert ctrl.queue.num_requeues(req) == 0
    assert metric("controller_runtime_reconcile_errors_total", controller="t-ctrl-error") == 2
    assert metric("controller_runtime_reconcile_total", controller="t-ctrl-error", result="error") == 2
    assert metric("controller_runtime_reconcile_total", controller="t-ctrl-error", result="success") == 1
    assert metric("controller_runtime_reconcile_time_seconds_count", controller="t-ctrl-error") == 3
    ctrl.stop()


def test_requeue_after_forgets_backoff_and_requeues_after_the_delay():
    results = iter([RuntimeError("x"), Result(requeue_after=0.2), Result(requeue=True), None])

    def reconcile(req: Request) -> Result | None:
        r = next(results)
        if isinstance(r, Exception):
            raise r
        return r

    ctrl = fast("t-ctrl-after", reconcile)
    req = Request(None, "n")
    ctrl.process(req)
    assert ctrl.queue.num_requeues(req) == 1
    ctrl.queue.get()
    ctrl.queue.done(req)
    t0 = time.monotonic()
    assert ctrl.process(req) == "requeue_after"
    assert ctrl.queue.num_requeues(req) == 0
    item, _ = ctrl.queue.get()
    assert item == req and time.monotonic() - t0 >= 0.2
    ctrl.queue.done(item)
    assert ctrl.process(req) == "requeue"
    assert ctrl.queue.num_requeues(req) == 1
    item, _ = ctrl.queue.get()
    ctrl.queue.done(item)
    assert ctrl.process(req) == "success", "None counts as an empty Result"
    assert ctrl.queue.num_requeues(req) == 0
    ctrl.stop()


class FlakyReconciler:
    """Fails the first two reconciles of each key; records concurrency per key."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.attempts: dict[str, int] = {}
        self.active: set[str] = set()
        self.overlaps = 0
        self.done: set[str] = set()

    def reconcile(self, request: Request) -> Result:
        with self.lock:
            if request.key in self.active:
                self.overlaps += 1
            self.active.add(request.key)
            self.attempts[request.key] = self.attempts.get(request.key, 0) + 1
            n = self.attempts[request.key]
        time.sleep(0.005)
        with self.lock:
            self.active.discard(request.key)
            if n < 3:
                raise RuntimeError("not yet")
            self.done.add(request.key)
        return Result()


def test_workers_converge_and_owned_objects_enqueue_their_owner():
    owners = [obj(f"w{i}", "1", uid=f"u{i}") for i in range(5)]

    def owned(i: int, controller: bool = True) -> dict:
        ref = {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "name": f"w{i}",
            "uid": f"u{i}",
            "controller": controller,
        }
        return obj(f"m{i}", "2", ownerReferences=[ref])

    primary = Informer(scripted(lists=[(owners, "5")], watches=[]), CONFIGMAPS)
    children = [owned(i) for i in range(5)] + [owned(9, controller=False)]
    secondary = Informer(scripted(lists=[(children, "5")], watches=[]), CONFIGMAPS)
    mapped_seen: list[str] = []
    mapped_client = scripted(lists=[([obj("x", "1", labels={"owner": "w4"})], "5")], watches=[])
    mapped = Informer(mapped_client, CONFIGMAPS)

    rec = FlakyReconciler()
    ctrl = fast("t-ctrl-run", rec, workers=4)
    ctrl.watch(primary)
    ctrl.watch_owned(secondary, owner_kind="Workspace")

    def mapper(o: dict) -> list[Request]:
        mapped_seen.append(o["metadata"]["name"])
        return [Request("ns", o["metadata"]["labels"]["owner"])]

    ctrl.watch_mapped(mapped, mapper)
    ctrl.start()  # starts and syncs the informers first
    deadline = time.monotonic() + 10
    while len(rec.done) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    ctrl.stop()
    for inf in (primary, secondary, mapped):
        inf.stop()
    assert rec.done == {f"ns/w{i}" for i in range(5)}, "w9 is owned without controller=true: not enqueued"
    assert rec.overlaps == 0
    assert mapped_seen == ["x"]
    assert all(n == 3 for n in rec.attempts.values()), rec.attempts
    assert metric("controller_runtime_max_concurrent_reconciles", controller="t-ctrl-run") == 4


def test_probe_server_serves_health_readiness_and_metric_names():
    ready = {"ok": False}
    srv = ProbeServer(
        0, "127.0.0.1", health_checks={"ping": lambda: True}, ready_checks={"sync": lambda: ready["ok"]}
    )
    srv.start()
    try:
        base = f"http://127.0.0.1:{srv.port}"
        assert urllib.request.urlopen(f"{base}/healthz", timeout=5).status == 200
        try:
            urllib.request.urlopen(f"{base}/readyz", timeout=5)
            raise AssertionError("readyz must be 503 before the ready checks pass")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
        ready["ok"] = True
        assert urllib.request.urlopen(f"{base}/readyz", timeout=5).status == 200
        Controller("t-probe", lambda r: Result())
        text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        for name in (
            "workqueue_depth",
            "workqueue_adds_total",
            "workqueue_queue_duration_seconds_bucket",
            "workqueue_work_duration_seconds_bucket",
            "workqueue_retries_total",
            "controller_runtime_reconcile_total",
            "controller_runtime_reconcile_errors_total",
            "controller_runtime_reconcile_time_seconds_bucket",
        ):
            assert f"\n{name}{{" in text, name
        assert 'controller_runtime_reconcile_total{controller="t-probe",result="success"} 0.0' in text
    finally:
        srv.stop()
