"""Manager lifecycle without an API server: runnables, probes, SIGTERM; owner mapping."""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request

from controller.runtime import Manager, Request
from controller.runtime.controller import controller_owner


def test_manager_without_leader_election_runs_runnables_and_stops_them():
    mgr = Manager(
        None,
        name="t-mgr",
        leader_election=False,
        health_port=0,
        metrics_port=0,  # type: ignore[arg-type]
        bind_host="127.0.0.1",
    )
    started = {"leader": threading.Event(), "always": threading.Event()}
    stopped = {"leader": threading.Event(), "always": threading.Event()}

    def runnable(which: str):  # type: ignore[no-untyped-def]
        def run(stop: threading.Event) -> None:
            started[which].set()
            stop.wait()
            stopped[which].set()

        return run

    mgr.add_runnable(runnable("leader"), needs_leader=True)
    mgr.add_runnable(runnable("always"), needs_leader=False)
    mgr.start()
    try:
        assert started["leader"].wait(5) and started["always"].wait(5)
        assert mgr.is_leader
        for path in ("healthz", "readyz"):
            assert (
                urllib.request.urlopen(f"http://127.0.0.1:{mgr.health_port}/{path}", timeout=5).status == 200
            )
        body = urllib.request.urlopen(f"http://127.0.0.1:{mgr.metrics_port}/metrics", timeout=5).read()
        assert (
            b"# TYPE workqueue_depth gauge" in body
            and b"# TYPE controller_runtime_reconcile_total counter" in body
        )
        late = threading.Event()
        mgr.add_runnable(lambda stop: late.set(), needs_leader=True)  # added after start: runs at once
        assert late.wait(5)
    finally:
        mgr.stop()
    assert stopped["leader"].is_set() and stopped["always"].is_set()
    assert not mgr.is_leader


def test_run_forever_stops_cleanly_on_sigterm():
    mgr = Manager(None, name="t-sig", leader_election=False, health_port=None, metrics_port=None)  # type: ignore[arg-type]
    stopped = threading.Event()
    mgr.add_runnable(lambda stop: (stop.wait(), stopped.set()), needs_leader=True)
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        t0 = time.monotonic()
        assert mgr.run_forever() == 0
        assert time.monotonic() - t0 < 10
        assert stopped.is_set()
    finally:
        timer.cancel()
        for s, handler in previous.items():
            signal.signal(s, handler)


def test_controller_owner_mapping():
    ref = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "name": "w", "uid": "u", "controller": True}
    other = {"apiVersion": "apps/v1", "kind": "Workspace", "name": "x", "uid": "v", "controller": True}
    obj = {"metadata": {"name": "m", "namespace": "ns", "ownerReferences": [ref, other]}}
    assert controller_owner(obj, "Workspace") == [Request("ns", "w"), Request("ns", "x")]
    assert controller_owner(obj, "Workspace", owner_group="kaito.sh") == [Request("ns", "w")]
    assert controller_owner(obj, "Workspace", owner_group="kaito.sh", owner_namespaced=False) == [
        Request(None, "w")
    ]
    assert controller_owner(obj, "Machine") == []
    not_ctrl = {"metadata": {"name": "m", "ownerReferences": [{**ref, "controller": False}]}}
    assert controller_owner(not_ctrl, "Workspace") == []
    assert controller_owner(not_ctrl, "Workspace", only_controller=False) == [Request(None, "w")]
