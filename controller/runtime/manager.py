"""The Manager: one process-wide owner of shared informers, leader election, controllers, other
runnables and the probe/metrics HTTP endpoints (controller-runtime's pkg/manager).

Why a manager: every controller in the process must share one cache per kind (one watch per kind
on the API server), start only after those caches have synced (or it would act on a partial view
and, say, create Machines that already exist), and run only while this replica holds the lease.

Start order: probe servers (so /healthz answers at once; /readyz is 503) -> informers -> wait for
cache sync (/readyz turns 200) -> runnables that need no leadership -> leader election ->
on gaining the lease: controllers and leader-only runnables. Stop reverses it: controllers drain,
the lease is released, informers and servers stop. Losing the lease while running stops the
manager (run_forever returns 1) so the process restarts clean, as controller-runtime does.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from controller.runtime.client import Client, ResourceKind
from controller.runtime.controller import Controller
from controller.runtime.events import EventRecorder
from controller.runtime.informer import Informer, SharedInformerFactory
from controller.runtime.leaderelection import LeaderElector
from controller.runtime.probes import Check, ProbeServer

log = logging.getLogger(__name__)

Runnable = Callable[[threading.Event], Any]


class Manager:
    def __init__(
        self,
        client: Client,
        name: str = "controller",
        namespace: str = "default",
        leader_election: bool = True,
        health_port: int | None = 8081,
        metrics_port: int | None = 8080,
        bind_host: str = "0.0.0.0",
        lease_name: str | None = None,
        identity: str | None = None,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        resync_period: float | None = 300.0,
        cache_sync_timeout: float = 120.0,
    ) -> None:
        """health_port / metrics_port: 0 picks a free port (read mgr.health_port after start), None
        disables the endpoint; the same non-zero port for both serves everything on one server."""
        self.client = client
        self.name = name
        self.namespace = namespace
        self.leader_election = leader_election
        self.cache_sync_timeout = cache_sync_timeout
        self.factory = SharedInformerFactory(client, resync_period=resync_period)
        self._health_port_arg = health_port
        self._metrics_port_arg = metrics_port
        self._bind_host = bind_host
        self.health_port: int | None = None
        self.metrics_port: int | None = None
        self._servers: list[ProbeServer] = []
        self._recorders: list[EventRecorder] = []
        self.health_checks: dict[str, Check] = {"ping": lambda: True}
        self.ready_checks: dict[str, Check] = {"informers": self.factory.has_synced}
        self._controllers: list[Controller] = []
        self._runnables: list[tuple[Runnable, bool]] = []
        self._runnable_threads: list[threading.Thread] = []
        self._stop_all = threading.Event()  # stops runnables that do not need the lease
        self._stop_leader = threading.Event()  # stops leader-only runnables
        self._leader_work_started = False
        self._leader_lock = threading.Lock()
        self._started = False
        self._stopping = False
        self._done = threading.Event()
        self.lost_leadership = False
        self.failed = False  # a controller could not start (e.g. its cache never synced)
        self.elector: LeaderElector | None = None
        if leader_election:
            self.elector = LeaderElector(
                client,
                lease_name or f"{name}-leader",
                namespace,
                identity=identity,
                lease_duration=lease_duration,
                renew_deadline=renew_deadline,
                retry_period=retry_period,
                on_started_leading=self._start_leader_work,
                on_stopped_leading=self._on_stopped_leading,
            )

    # --- registration -------------------------------------------------------------------------
    def informer(self, kind: ResourceKind, namespace: str | None = None,
                 label_selector: str | None = None) -> Informer:
        """The shared informer for (kind, namespace, label selector); started with the manager."""
        return self.factory.informer(kind, namespace, label_selector)

    def add_controller(self, ctrl: Controller) -> None:
        self._controllers.append(ctrl)
        if self._leader_work_started:
            self._start_controller(ctrl)

    def add_runnable(self, fn: Runnable, needs_leader: bool = True) -> None:
        """fn(stop_event) runs in its own thread and must return soon after stop_event is set."""
        self._runnables.append((fn, needs_leader))
        if self._started and (not needs_leader or self._leader_work_started):
            self._spawn(fn, self._stop_leader if needs_leader else self._stop_all)

    def add_health_check(self, name: str, check: Check) -> None:
        self.health_checks[name] = check

    def add_ready_check(self, name: str, check: Check) -> None:
        self.ready_checks[name] = check

    def event_recorder(self, component: str | None = None) -> EventRecorder:
        """An asynchronous recorder: reconciles queue Events; stop() writes what is left."""
        recorder = EventRecorder(self.client, component or self.name, asynchronous=True)
        self._recorders.append(recorder)
        return recorder

    @property
    def is_leader(self) -> bool:
        if self.elector is None:
            return self._leader_work_started
        return self.elector.is_leader

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Start everything and return; controllers start once the lease is held."""
        if self._started:
            return
        self._started = True
        self._start_servers()
        self.factory.start()
        if not self._wait_for_cache_sync():
            if self._done.is_set():  # a signal (or stop()) while the API server was unreachable
                return
            self.stop()
            raise TimeoutError(
                f"manager {self.name}: informer caches did not sync in {self.cache_sync_timeout}s"
            )
        for fn, needs_leader in self._runnables:
            if not needs_leader:
                self._spawn(fn, self._stop_all)
        if self.elector is not None:
            self.elector.start()
        else:
            self._start_leader_work()

    def stop(self) -> None:
        """Drain controllers, release the lease, stop informers and servers. Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        if self.elector is not None:
            self.elector.stop()  # steps down (-> _stop_leader_work) then releases the lease
        self._stop_leader_work()
        self._stop_all.set()
        for t in self._runnable_threads:
            t.join(10)
        for recorder in self._recorders:
            recorder.stop()
        self.factory.stop()
        for server in self._servers:
            with contextlib.suppress(Exception):
                server.stop()
        self._done.set()

    def run_forever(self) -> int:
        """start(), block until SIGTERM/SIGINT (or lost leadership, or a controller that could not
        start), stop(); returns an exit code (0 on a signal, 1 otherwise)."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self._done.set())
        self.start()
        self._done.wait()
        self.stop()
        return 1 if self.lost_leadership or self.failed else 0

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    # --- internals --------------------------------------------------------------------------------
    def _wait_for_cache_sync(self) -> bool:
        """Like the factory's wait, but a SIGTERM while the API server is unreachable ends it:
        start() runs before run_forever() waits for the signal."""
        deadline = time.monotonic() + self.cache_sync_timeout
        while not self.factory.has_synced():
            if self._done.is_set() or time.monotonic() >= deadline:
                return False
            self._done.wait(0.05)
        return True

    def _start_servers(self) -> None:
        hp, mp = self._health_port_arg, self._metrics_port_arg
        if hp is not None and hp == mp and hp != 0:
            srv = ProbeServer(hp, self._bind_host, self.health_checks, self.ready_checks).start()
            self._servers.append(srv)
            self.health_port = self.metrics_port = srv.port
            return
        if hp is not None:
            srv = ProbeServer(hp, self._bind_host, self.health_checks, self.ready_checks, serve_metrics=False)
            self._servers.append(srv.start())
            self.health_port = srv.port
        if mp is not None:
            srv = ProbeServer(mp, self._bind_host, serve_probes=False)
            self._servers.append(srv.start())
            self.metrics_port = srv.port

    def _spawn(self, fn: Runnable, stop: threading.Event) -> None:
        def run() -> None:
            try:
                fn(stop)
            except Exception:
                log.exception("manager %s: runnable %r failed", self.name, fn)

        t = threading.Thread(target=run, name=f"runnable-{getattr(fn, '__name__', 'fn')}", daemon=True)
        self._runnable_threads.append(t)
        t.start()

    def _start_leader_work(self) -> None:
        with self._leader_lock:
            if self._leader_work_started or self._stopping:
                return
            self._leader_work_started = True
            self._stop_leader.clear()
            for ctrl in self._controllers:
                self._start_controller(ctrl)
            for fn, needs_leader in self._runnables:
                if needs_leader:
                    self._spawn(fn, self._stop_leader)

    def _start_controller(self, ctrl: Controller) -> None:
        """Start off the caller's thread: this runs in the elector's callback, which must return
        quickly to keep renewing the lease even if a controller waits long for an informer."""

        def start() -> None:
            try:
                ctrl.start()
            except Exception:
                log.exception("manager %s: controller %s failed to start; stopping", self.name, ctrl.name)
                self.failed = True
                self._done.set()

        threading.Thread(target=start, name=f"start-{ctrl.name}", daemon=True).start()

    def _stop_leader_work(self) -> None:
        with self._leader_lock:
            if not self._leader_work_started:
                return
            self._stop_leader.set()
            for ctrl in self._controllers:
                ctrl.stop()
            self._leader_work_started = False

    def _on_stopped_leading(self) -> None:
        self._stop_leader_work()
        if not self._stopping:
            log.error("manager %s: lost leadership; stopping", self.name)
            self.lost_leadership = True
            self._done.set()
