"""Informers: a local cache of one kind kept current by list + watch, with event handlers.

A port of client-go's Reflector + DeltaFIFO + sharedIndexInformer, simplified to one thread that
applies each change to the Store and then calls the handlers, so handlers always see the store
already updated and events of one object in order.

Why each piece:

* list, then watch from the list's resourceVersion: nothing that happens between the two is lost.
* allowWatchBookmarks: the server periodically tells us the current resourceVersion even when
  nothing we watch changes, so a re-watch after a quiet period does not start from an RV etcd has
  already compacted.
* a clean end of the stream (timeoutSeconds) re-watches from the last RV seen: cheap, and exact.
* 410 Gone, or a broken stream (apiserver restart, network error): relist and diff the fresh list
  against the store. Objects that changed produce on_update, new ones on_add, and objects that
  vanished produce on_delete with a DeletedFinalStateUnknown tombstone (the delete itself was never
  seen). Unchanged objects (same resourceVersion) produce nothing, so no final state is duplicated.
* periodic resync: on_update(obj, obj) for every cached object, so level-triggered reconcilers get
  a chance to notice drift in the outside world (a cloud VM gone) even when the API is quiet.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.runtime.client import Client, EventStream, Gone, ResourceKind
from controller.runtime.store import DeletedFinalStateUnknown, Store, object_key

log = logging.getLogger(__name__)


@dataclass
class EventHandler:
    """Callbacks for one consumer; any of them may be None."""

    on_add: Callable[[dict], Any] | None = None
    on_update: Callable[[dict, dict], Any] | None = None
    on_delete: Callable[[dict | DeletedFinalStateUnknown], Any] | None = None


def _rv(obj: dict) -> str:
    return (obj.get("metadata") or {}).get("resourceVersion", "")


class Informer:
    """List + watch one kind (optionally one namespace / label selector) into a Store."""

    def __init__(
        self,
        client: Client,
        kind: ResourceKind,
        namespace: str | None = None,
        label_selector: str | None = None,
        resync_period: float | None = None,
        field_selector: str | None = None,
        watch_timeout: int = 300,
        backoff_max: float = 30.0,
        list_page_size: int = 500,
    ) -> None:
        self.client = client
        self.kind = kind
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self.watch_timeout = watch_timeout
        self.backoff_max = backoff_max
        self.list_page_size = list_page_size  # paged lists keep big relists off the apiserver's heap
        self.store = Store()
        self.resource_version = ""  # last RV seen (list, event or bookmark)
        self.relists = 0  # how many times the cache was rebuilt from a list (for tests and logs)
        self._handlers: list[EventHandler] = []
        self._lock = threading.RLock()  # serializes store mutation + handler calls (watch vs resync)
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._watch: EventStream | None = None
        self._threads: list[threading.Thread] = []

    # --- public API -------------------------------------------------------------------------------
    def add_event_handler(
        self,
        on_add: Callable[[dict], Any] | None = None,
        on_update: Callable[[dict, dict], Any] | None = None,
        on_delete: Callable[[dict | DeletedFinalStateUnknown], Any] | None = None,
    ) -> EventHandler:
        """Register callbacks. A handler added after the cache has content gets on_add for every
        cached object first (as client-go's AddEventHandler), so late consumers miss nothing."""
        handler = EventHandler(on_add, on_update, on_delete)
        with self._lock:
            self._handlers.append(handler)
            if on_add is not None:
                for obj in self.store.list():
                    self._call(on_add, obj)
        return handler

    def start(self) -> Informer:
        """Start the list/watch thread (and the resync thread); returns at once."""
        if self._threads:
            return self
        self._stop.clear()
        t = threading.Thread(target=self._run, name=f"informer-{self.kind.plural}", daemon=True)
        self._threads.append(t)
        t.start()
        if self.resync_period:
            r = threading.Thread(target=self._resync_loop, name=f"resync-{self.kind.plural}", daemon=True)
            self._threads.append(r)
            r.start()
        return self

    def has_synced(self) -> bool:
        """True once the first list has been applied to the store."""
        return self._synced.is_set()

    def wait_for_sync(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        watch = self._watch
        if watch is not None:
            watch.close()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout)
        self._threads = []

    @property
    def started(self) -> bool:
        return bool(self._threads)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    # --- main loop --------------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.2
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    self._list_and_diff()
                    need_list = False
                self._watch_once()
                backoff = 0.2  # clean end of stream: re-watch from the last RV
            except Gone as exc:
                log.info("%s: watch expired (%s); relisting", self.kind, exc.message)
                need_list = True
            except Exception as exc:
                if self._stop.is_set():
                    break
                log.warning("%s: list/watch failed (%s); relisting in %.1fs", self.kind, exc, backoff)
                need_list = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.backoff_max)

    def _list_and_diff(self) -> None:
        items, rv = self.client.list(
            self.kind,
            self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            limit=self.list_page_size,
        )
        with self._lock:
            if self._stop.is_set():
                return
            first = not self._synced.is_set()
            fresh = {object_key(obj): obj for obj in items}
            for key in list(self.store.keys()):
                if key not in fresh:
                    old = self.store.delete(key)
                    tombstone = DeletedFinalStateUnknown(key, old)
                    self._dispatch("delete", tombstone)
            for obj in fresh.values():
                old = self.store.update(obj)
                if old is None:
                    self._dispatch("add", obj)
                elif _rv(old) != _rv(obj):
                    self._dispatch("update", old, obj)
            self.resource_version = rv
            if not first:
                self.relists += 1
            self._synced.set()

    def _watch_once(self) -> None:
        timeout = int(self.watch_timeout * (1 + random.random())) if self.watch_timeout else None
        stream = self.client.watch(
            self.kind,
            self.namespace,
            resource_version=self.resource_version,
            timeout_seconds=timeout,
            allow_bookmarks=True,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
        )
        self._watch = stream
        try:
            if self._stop.is_set():
                return
            for event in stream:
                if self._stop.is_set():
                    return
                self._apply(event)
        except Exception:
            if self._stop.is_set():
                return
            raise
        finally:
            self._watch = None
            stream.close()

    def _apply(self, event: dict) -> None:
        etype = event.get("type")
        obj = event.get("object") or {}
        rv = _rv(obj)
        if etype == "BOOKMARK":
            if rv:
                self.resource_version = rv
            return
        obj.setdefault("apiVersion", self.kind.api_version)
        obj.setdefault("kind", self.kind.kind)
        with self._lock:
            if etype in ("ADDED", "MODIFIED"):
                old = self.store.update(obj)
                if old is None:
                    self._dispatch("add", obj)
                elif _rv(old) != rv:
                    self._dispatch("update", old, obj)
            elif etype == "DELETED":
                # a delete the store never saw (already tombstoned by a relist) is not repeated
                if self.store.delete(obj) is not None:
                    self._dispatch("delete", obj)
            else:
                log.warning("%s: unknown watch event type %r", self.kind, etype)
            if rv:
                self.resource_version = rv

    # --- resync -----------------------------------------------------------------------------------
    def _resync_loop(self) -> None:
        assert self.resync_period
        while not self._stop.wait(self.resync_period):
            if self._synced.is_set():
                self.resync()

    def resync(self) -> None:
        """on_update(obj, obj) for every cached object (what the periodic resync does)."""
        with self._lock:
            for obj in self.store.list():
                self._dispatch("update", obj, obj)

    # --- handler dispatch -------------------------------------------------------------------------
    def _dispatch(self, what: str, *args: Any) -> None:
        for handler in list(self._handlers):
            fn = {"add": handler.on_add, "update": handler.on_update, "delete": handler.on_delete}[what]
            if fn is not None:
                self._call(fn, *args)

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # a buggy handler must not kill the informer
            log.exception("%s: event handler %r failed", self.kind, fn)


class SharedInformerFactory:
    """One Informer per (kind, namespace, label selector), shared by every controller that asks for it."""

    def __init__(self, client: Client, resync_period: float | None = 300) -> None:
        self.client = client
        self.resync_period = resync_period
        self._informers: dict[tuple[ResourceKind, str | None, str | None], Informer] = {}
        self._lock = threading.Lock()
        self._started = False

    def informer(self, kind: ResourceKind, namespace: str | None = None,
                 label_selector: str | None = None) -> Informer:
        """``label_selector`` narrows what is listed and cached (a Pod informer for one app's pods,
        not every Pod of the cluster); informers with different selectors are different caches."""
        with self._lock:
            key = (kind, namespace, label_selector)
            inf = self._informers.get(key)
            if inf is None:
                inf = Informer(self.client, kind, namespace, label_selector=label_selector,
                               resync_period=self.resync_period)
                self._informers[key] = inf
                if self._started:
                    inf.start()
            return inf

    @property
    def informers(self) -> list[Informer]:
        with self._lock:
            return list(self._informers.values())

    def start(self) -> None:
        with self._lock:
            self._started = True
            for inf in self._informers.values():
                inf.start()

    def wait_for_cache_sync(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for inf in self.informers:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not inf.wait_for_sync(remaining):
                return False
        return True

    def has_synced(self) -> bool:
        return all(inf.has_synced() for inf in self.informers)

    def stop(self) -> None:
        for inf in self.informers:
            with contextlib.suppress(Exception):
                inf.stop()
