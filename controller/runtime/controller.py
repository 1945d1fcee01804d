"""The controller loop: informer events -> work queue of Requests -> N workers -> reconcile.

A port of controller-runtime's pkg/internal/controller + pkg/handler. Why it is shaped this way:

* Only the *key* of an object is queued (a Request), never the event. Reconcilers are level-
  triggered: they read current state from the cache, so coalescing many events of one object
  into one reconcile is correct and cheap.
* The queue guarantees one worker per key at a time, so a reconciler never races itself on one
  object while N workers make progress on different objects.
* Outcomes map to the queue exactly as controller-runtime does:
  exception -> add_rate_limited (exponential backoff); Result(requeue_after=s) -> forget + add_after;
  Result(requeue=True) -> add_rate_limited; success -> forget (reset the backoff).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from controller.runtime import metrics
from controller.runtime.informer import Informer
from controller.runtime.ratelimiter import RateLimiter
from controller.runtime.store import DeletedFinalStateUnknown
from controller.runtime.workqueue import RateLimitingQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """Which object to reconcile: namespace (None for cluster-scoped kinds) and name."""

    namespace: str | None
    name: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @classmethod
    def from_object(cls, obj: dict) -> Request:
        meta = obj.get("metadata") or {}
        return cls(meta.get("namespace") or None, meta["name"])

    def __str__(self) -> str:
        return self.key


@dataclass
class Result:
    """requeue: retry with backoff; requeue_after: check again after that many seconds."""

    requeue: bool = False
    requeue_after: float | None = None


@runtime_checkable
class Reconciler(Protocol):
    def reconcile(self, request: Request) -> Result: ...


ReconcileFunc = Callable[[Request], "Result | None"]


def _unwrap(obj: dict | DeletedFinalStateUnknown) -> dict | None:
    if isinstance(obj, DeletedFinalStateUnknown):
        return obj.obj if isinstance(obj.obj, dict) else None
    return obj


def controller_owner(
    obj: dict,
    owner_kind: str,
    owner_group: str | None = None,
    only_controller: bool = True,
    owner_namespaced: bool = True,
) -> list[Request]:
    """Requests for obj's owners of owner_kind (only the controller ref by default).

    An ownerReference names no namespace: a namespaced owner lives in the object's namespace, a
    cluster-scoped owner (owner_namespaced=False) in none."""
    meta = obj.get("metadata") or {}
    out: list[Request] = []
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") != owner_kind:
            continue
        if only_controller and not ref.get("controller"):
            continue
        if owner_group is not None:
            api_version = ref.get("apiVersion", "")
            group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
            if group != owner_group:
                continue
        namespace = (meta.get("namespace") or None) if owner_namespaced else None
        out.append(Request(namespace, ref["name"]))
    return out


class Controller:
    """Runs a Reconciler over a RateLimitingQueue with `workers` threads."""

    def __init__(
        self,
        name: str,
        reconciler: Reconciler | ReconcileFunc,
        workers: int = 1,
        rate_limiter: RateLimiter | None = None,
        cache_sync_timeout: float = 120.0,
    ) -> None:
        self.name = name
        self.reconciler = reconciler
        self.workers = workers
        self.queue = RateLimitingQueue(name=name, rate_limiter=rate_limiter)
        self.cache_sync_timeout = cache_sync_timeout
        self._informers: list[Informer] = []
        self._threads: list[threading.Thread] = []
        self._started = False
        self._m_time = metrics.RECONCILE_TIME.labels(name)
        self._m_errors = metrics.RECONCILE_ERRORS.labels(name)
        self._m_active = metrics.ACTIVE_WORKERS.labels(name)
        metrics.MAX_CONCURRENT_RECONCILES.labels(name).set(workers)
        for result in ("success", "error", "requeue", "requeue_after"):
            metrics.RECONCILE_TOTAL.labels(name, result)  # expose zeros, as controller-runtime does
        self._m_errors.inc(0)

    # --- watches ----------------------------------------------------------------------------------
    def watch(self, informer: Informer) -> None:
        """Primary objects: each event enqueues the object's own key."""
        self.watch_mapped(informer, lambda obj: [Request.from_object(obj)])

    def watch_owned(
        self,
        informer: Informer,
        owner_kind: str,
        owner_group: str | None = None,
        only_controller: bool = True,
        owner_namespaced: bool = True,
    ) -> None:
        """Owned objects: each event enqueues the owner named by the controller ownerReference
        (on update both the old and the new owner, in case the reference changed)."""
        self.watch_mapped(
            informer,
            lambda obj: controller_owner(obj, owner_kind, owner_group, only_controller, owner_namespaced),
        )

    def watch_mapped(self, informer: Informer, mapper: Callable[[dict], Iterable[Request]]) -> None:
        """Any mapping from an object to the Requests it should trigger (labels, indexes...)."""

        def enqueue(obj: dict | DeletedFinalStateUnknown | None) -> None:
            real = _unwrap(obj) if obj is not None else None
            if real is None:
                return
            try:
                requests = list(mapper(real))
            except Exception:
                log.exception(
                    "controller %s: mapper failed for %s", self.name, real.get("metadata", {}).get("name")
                )
                return
            for req in requests:
                self.queue.add(req)

        def on_update(old: dict, new: dict) -> None:
            if old is not new:
                enqueue(old)
            enqueue(new)

        informer.add_event_handler(on_add=enqueue, on_update=on_update, on_delete=enqueue)
        self._informers.append(informer)

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self, wait_for_sync: bool = True) -> None:
        """Wait for the watched caches (starting informers nobody started), then start the workers."""
        if self._started:
            return
        self._started = True
        if wait_for_sync:
            for inf in self._informers:
                if not inf.started:
                    inf.start()
                if not inf.wait_for_sync(self.cache_sync_timeout):
                    raise TimeoutError(f"controller {self.name}: cache for {inf.kind} did not sync")
        for i in range(self.workers):
            t = threading.Thread(target=self._worker, name=f"{self.name}-worker-{i}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop taking new work, let in-flight reconciles finish (drain), join the workers."""
        self.queue.shut_down_with_drain(timeout)
        self.queue.shut_down()
        for t in self._threads:
            t.join(timeout)
        self._threads = []

    # --- workers ----------------------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            item, shutdown = self.queue.get()
            if shutdown:
                return
            try:
                self.process(item)
            finally:
                self.queue.done(item)

    def process(self, request: Request) -> str:
        """Reconcile one request and feed the outcome back to the queue; returns the result label."""
        self._m_active.inc()
        start = time.monotonic()
        try:
            result = self._call(request)
        except Exception as exc:
            self._m_errors.inc()
            outcome = "error"
            log.warning(
                "controller %s: reconcile %s failed: %s",
                self.name,
                request,
                exc,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            self.queue.add_rate_limited(request)
        else:
            if result is not None and result.requeue_after is not None and result.requeue_after > 0:
                outcome = "requeue_after"
                self.queue.forget(request)
                self.queue.add_after(request, result.requeue_after)
            elif result is not None and result.requeue:
                outcome = "requeue"
                self.queue.add_rate_limited(request)
            else:
                outcome = "success"
                self.queue.forget(request)
        finally:
            self._m_time.observe(time.monotonic() - start)
            self._m_active.dec()
        metrics.RECONCILE_TOTAL.labels(self.name, outcome).inc()
        return outcome

    def _call(self, request: Request) -> Any:
        rec = self.reconciler
        if hasattr(rec, "reconcile"):
            return rec.reconcile(request)  # type: ignore[union-attr]
        return rec(request)  # type: ignore[operator]
