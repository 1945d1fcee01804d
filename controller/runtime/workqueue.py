"""The controller work queue, ported from client-go util/workqueue (queue.go, delaying_queue.go,
rate_limiting_queue.go).

Why these exact semantics matter for reconcilers:

* ``dirty`` + ``processing`` sets: an item (an object key) is never handed to two workers at once,
  so two reconciles of one object never race; an ``add`` while it is being processed is not lost but
  parked in ``dirty`` and handed out again once the worker calls ``done``; repeated adds of a waiting
  item collapse into one (events for one object coalesce).
* ``add_after``: a heap ordered by ready time, fed to the queue by one thread, for ``requeue_after``
  and for rate-limited retries.
* ``add_rate_limited``: per-item exponential backoff max'ed with an overall token bucket;
  ``forget`` resets the item's backoff after a success.
* ``shut_down_with_drain``: stop accepting work but wait for in-flight items so a stopping controller
  finishes what it started.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Hashable
from typing import Any

from controller.runtime import metrics
from controller.runtime.ratelimiter import RateLimiter, default_controller_rate_limiter


class Queue:
    """A FIFO of unique items with client-go's dirty/processing bookkeeping."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._cond = threading.Condition()
        self._queue: deque[Hashable] = deque()
        self._dirty: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._shutting_down = False
        self._drain = False
        self._added_at: dict[Hashable, float] = {}
        self._started_at: dict[Hashable, float] = {}
        self._m_depth = metrics.WORKQUEUE_DEPTH.labels(name)
        self._m_adds = metrics.WORKQUEUE_ADDS.labels(name)
        self._m_queue_duration = metrics.WORKQUEUE_QUEUE_DURATION.labels(name)
        self._m_work_duration = metrics.WORKQUEUE_WORK_DURATION.labels(name)
        metrics.WORKQUEUE_UNFINISHED_WORK.labels(name).set_function(self._unfinished_work)
        metrics.WORKQUEUE_LONGEST_RUNNING.labels(name).set_function(self._longest_running)

    # --- producer side ---------------------------------------------------------------------
    def add(self, item: Hashable) -> None:
        """Queue item unless it is already waiting; if it is being processed, re-queue it on done()."""
        with self._cond:
            if self._shutting_down or item in self._dirty:
                return
            self._m_adds.inc()
            self._dirty.add(item)
            if item in self._processing:
                return
            self._push(item)

    def _push(self, item: Hashable) -> None:
        self._queue.append(item)
        self._added_at.setdefault(item, time.monotonic())
        self._m_depth.inc()
        self._cond.notify()

    # --- consumer side ---------------------------------------------------------------------
    def get(self) -> tuple[Any, bool]:
        """Block until an item is available; returns (item, False), or (None, True) once shut down
        and empty. Items still queued at shutdown are handed out first, as in client-go."""
        with self._cond:
            while not self._queue and not self._shutting_down:
                self._cond.wait()
            if not self._queue:
                return None, True
            item = self._queue.popleft()
            self._m_depth.dec()
            now = time.monotonic()
            added = self._added_at.pop(item, None)
            if added is not None:
                self._m_queue_duration.observe(now - added)
            self._processing.add(item)
            self._started_at[item] = now
            self._dirty.discard(item)
            return item, False

    def done(self, item: Hashable) -> None:
        """Mark item finished; if it was re-added meanwhile, queue it again."""
        with self._cond:
            self._processing.discard(item)
            started = self._started_at.pop(item, None)
            if started is not None:
                self._m_work_duration.observe(time.monotonic() - started)
            if item in self._dirty:
                self._push(item)
            elif not self._processing:
                self._cond.notify_all()  # wakes shut_down_with_drain

    # --- lifecycle -------------------------------------------------------------------------
    def shut_down(self) -> None:
        """Stop accepting adds; wake all getters (they drain what is queued, then see shutdown)."""
        with self._cond:
            self._shutting_down = True
            self._drain = False
            self._cond.notify_all()

    def shut_down_with_drain(self, timeout: float | None = None) -> bool:
        """Like shut_down, then wait until every in-flight item is done(). Returns False on timeout."""
        with self._cond:
            self._shutting_down = True
            self._drain = True
            self._cond.notify_all()
            deadline = None if timeout is None else time.monotonic() + timeout
            while self._processing and self._drain:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    @property
    def shutting_down(self) -> bool:
        with self._cond:
            return self._shutting_down

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)

    # --- metrics helpers -----------------------------------------------------------------------
    def _unfinished_work(self) -> float:
        now = time.monotonic()
        with self._cond:
            return sum(now - t for t in self._started_at.values())

    def _longest_running(self) -> float:
        now = time.monotonic()
        with self._cond:
            return max((now - t for t in self._started_at.values()), default=0.0)


class DelayingQueue(Queue):
    """Queue plus add_after: a min-heap of (ready_at, seq, item) drained into the queue by a thread."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self._delay_cond = threading.Condition()
        self._heap: list[tuple[float, int, Hashable]] = []
        self._waiting: dict[Hashable, float] = {}  # item -> earliest ready time; stale heap entries skipped
        self._seq = itertools.count()
        self._stopped = False
        self._waiter = threading.Thread(target=self._wait_loop, name=f"workqueue-delay-{name}", daemon=True)
        self._waiter.start()

    def add_after(self, item: Hashable, seconds: float) -> None:
        """Add item once `seconds` have passed; an earlier pending time for the same item wins."""
        if self.shutting_down:
            return
        if seconds <= 0:
            self.add(item)
            return
        ready_at = time.monotonic() + seconds
        with self._delay_cond:
            current = self._waiting.get(item)
            if current is not None and current <= ready_at:
                return
            self._waiting[item] = ready_at
            heapq.heappush(self._heap, (ready_at, next(self._seq), item))
            self._delay_cond.notify()

    def _wait_loop(self) -> None:
        while True:
            ready: list[Hashable] = []
            with self._delay_cond:
                if self._stopped:
                    return
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    ready_at, _, item = heapq.heappop(self._heap)
                    if self._waiting.get(item) == ready_at:
                        del self._waiting[item]
                        ready.append(item)
                if not ready:
                    timeout = (self._heap[0][0] - now) if self._heap else None
                    self._delay_cond.wait(timeout)
            for item in ready:  # outside the delay lock: add() takes the queue lock
                self.add(item)

    def shut_down(self) -> None:
        super().shut_down()
        self._stop_waiter()

    def shut_down_with_drain(self, timeout: float | None = None) -> bool:
        self._stop_waiter()
        return super().shut_down_with_drain(timeout)

    def _stop_waiter(self) -> None:
        with self._delay_cond:
            self._stopped = True
            self._delay_cond.notify_all()

    def num_waiting(self) -> int:
        """Items scheduled by add_after that have not become ready yet."""
        with self._delay_cond:
            return len(self._waiting)


class RateLimitingQueue(DelayingQueue):
    """DelayingQueue plus add_rate_limited/forget/num_requeues over a RateLimiter.

    The default limiter is client-go's controller default: per-item exponential 5ms..1000s, max'ed
    with an overall token bucket of 10 qps and burst 100.
    """

    def __init__(self, name: str = "", rate_limiter: RateLimiter | None = None) -> None:
        super().__init__(name)
        self.rate_limiter: RateLimiter = rate_limiter or default_controller_rate_limiter()
        self._m_retries = metrics.WORKQUEUE_RETRIES.labels(name)

    def add_rate_limited(self, item: Hashable) -> None:
        """Re-add item after the limiter's delay (which grows with each call until forget)."""
        self._m_retries.inc()
        self.add_after(item, self.rate_limiter.when(item))

    def forget(self, item: Hashable) -> None:
        """The item succeeded: reset its backoff (it does not remove it from the queue)."""
        self.rate_limiter.forget(item)

    def num_requeues(self, item: Hashable) -> int:
        return self.rate_limiter.num_requeues(item)
