"""Work queue semantics (client-go util/workqueue) that the controllers rely on."""

from __future__ import annotations

import random
import threading
import time

from prometheus_client import REGISTRY

from controller.runtime import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    Queue,
    RateLimitingQueue,
)


def _drain(q: Queue, n: int, timeout: float = 5.0) -> list:
    """Get n items (marking each done) within timeout."""
    out: list = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < deadline, f"only got {out}"
        item, shutdown = q.get()
        assert not shutdown
        out.append(item)
        q.done(item)
    return out


def test_adds_of_a_waiting_item_collapse_into_one():
    q = Queue("t-dedupe")
    for _ in range(3):
        q.add("a")
    q.add("b")
    assert len(q) == 2
    assert _drain(q, 2) == ["a", "b"]
    assert len(q) == 0
    assert REGISTRY.get_sample_value("workqueue_adds_total", {"name": "t-dedupe"}) == 2


def test_readd_while_processing_is_kept_and_processed_once_more_after_done():
    q = Queue("t-readd")
    q.add("a")
    item, _ = q.get()
    q.add("a")
    q.add("a")
    assert len(q) == 0, "an item being processed must not be handed to another worker"
    q.done(item)
    assert len(q) == 1
    item2, _ = q.get()
    assert item2 == "a"
    q.done(item2)
    assert len(q) == 0


def test_no_item_is_processed_by_two_workers_at_once():
    q = Queue("t-concurrent")
    items = [f"k{i}" for i in range(10)]
    in_flight: set[str] = set()
    violations: list[str] = []
    processed: dict[str, int] = dict.fromkeys(items, 0)
    last_processed_at: dict[str, float] = {}
    lock = threading.Lock()

    def worker() -> None:
        while True:
            item, shutdown = q.get()
            if shutdown:
                return
            with lock:
                if item in in_flight:
                    violations.append(item)
                in_flight.add(item)
            time.sleep(random.uniform(0, 0.002))
            with lock:
                in_flight.discard(item)
                processed[item] += 1
                last_processed_at[item] = time.monotonic()
            q.done(item)

    workers = [threading.Thread(target=worker) for _ in range(8)]
    for w in workers:
        w.start()
    last_add: dict[str, float] = {}

    def producer() -> None:
        for _ in range(300):
            item = random.choice(items)
            q.add(item)
            with lock:
                last_add[item] = time.monotonic()

    producers = [threading.Thread(target=producer) for _ in range(3)]
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    assert q.shut_down_with_drain(timeout=10)
    for w in workers:
        w.join(5)
        assert not w.is_alive()
    assert violations == []
    assert all(n >= 1 for n in processed.values())
    # every add was followed by a processing that started after it: nothing was lost
    for item, added in last_add.items():
        assert last_processed_at[item] >= added


def test_shutdown_with_drain_waits_for_in_flight_items_and_hands_out_queued_ones():
    q = Queue("t-drain")
    q.add("a")
    q.add("b")
    item, _ = q.get()
    drained = threading.Event()

    def drain() -> None:
        q.shut_down_with_drain()
        drained.set()

    t = threading.Thread(target=drain)
    t.start()
    time.sleep(0.1)
    assert not drained.is_set(), "drain must wait for the in-flight item"
    q.add("c")  # ignored after shutdown
    rest, shutdown = q.get()  # queued items are still handed out
    assert (rest, shutdown) == ("b", False)
    q.done(item)
    time.sleep(0.05)
    assert not drained.is_set(), "b is still in flight"
    q.done(rest)
    t.join(2)
    assert drained.is_set()
    assert q.get() == (None, True)


def test_shut_down_wakes_blocked_getters():
    q = Queue("t-wake")
    results: list = []
    t = threading.Thread(target=lambda: results.append(q.get()))
    t.start()
    time.sleep(0.05)
    q.shut_down()
    t.join(2)
    assert results == [(None, True)]


def test_add_after_hands_items_out_in_ready_time_order():
    q = RateLimitingQueue("t-after")
    t0 = time.monotonic()
    q.add_after("c", 0.3)
    q.add_after("a", 0.1)
    q.add_after("b", 0.2)
    q.add_after("now", 0)
    assert len(q) == 1
    got = []
    for _ in range(4):
        item, _ = q.get()
        got.append((item, time.monotonic() - t0))
        q.done(item)
    assert [g[0] for g in got] == ["now", "a", "b", "c"]
    assert got[1][1] >= 0.1 and got[2][1] >= 0.2 and got[3][1] >= 0.3
    q.shut_down()


def test_add_after_keeps_the_earlier_time_for_the_same_item():
    q = RateLimitingQueue("t-after-dup")
    q.add_after("x", 5)
    q.add_after("x", 0.05)
    q.add_after("x", 10)  # later: ignored
    assert q.num_waiting() == 1
    t0 = time.monotonic()
    item, _ = q.get()
    assert item == "x" and time.monotonic() - t0 < 2
    q.done(item)
    time.sleep(0.1)
    assert len(q) == 0 and q.num_waiting() == 0
    q.shut_down()


def test_item_backoff_grows_exponentially_caps_and_resets_on_forget():
    rl = ItemExponentialFailureRateLimiter(base_delay=0.01, max_delay=0.1)
    delays = [rl.when("a") for _ in range(6)]
    assert delays == [0.01, 0.02, 0.04, 0.08, 0.1, 0.1]
    assert rl.num_requeues("a") == 6
    assert rl.when("b") == 0.01, "backoff is per item"
    rl.forget("a")
    assert rl.num_requeues("a") == 0
    assert rl.when("a") == 0.01


def test_bucket_spreads_requests_beyond_the_burst_at_1_over_qps():
    now = [100.0]
    rl = BucketRateLimiter(qps=10, burst=3, clock=lambda: now[0])
    assert [rl.when(i) for i in range(3)] == [0, 0, 0]
    assert [round(rl.when(i), 3) for i in range(3, 6)] == [0.1, 0.2, 0.3]
    now[0] += 1.0  # 10 tokens refill, capped at the burst (3); 3 were owed
    assert rl.when("x") == 0


def test_max_of_limiters_takes_the_longest_wait():
    now = [0.0]
    rl = MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(0.001, 10), BucketRateLimiter(1, 1, clock=lambda: now[0])
    )
    assert rl.when("a") == 0.001  # bucket has a token
    assert rl.when("a") == 1.0  # bucket empty: 1s beats 0.002
    assert rl.num_requeues("a") == 2
    rl.forget("a")
    assert rl.num_requeues("a") == 0


def test_rate_limited_requeue_waits_for_the_backoff_and_forget_resets_it():
    q = RateLimitingQueue("t-rl", rate_limiter=ItemExponentialFailureRateLimiter(0.05, 1))
    delays = []
    for _ in range(3):
        t0 = time.monotonic()
        q.add_rate_limited("a")
        item, _ = q.get()
        delays.append(time.monotonic() - t0)
        q.done(item)
    assert q.num_requeues("a") == 3
    assert delays[0] >= 0.05 and delays[1] >= 0.1 and delays[2] >= 0.2
    assert delays[2] > delays[0]
    q.forget("a")
    assert q.num_requeues("a") == 0
    assert REGISTRY.get_sample_value("workqueue_retries_total", {"name": "t-rl"}) == 3
    q.shut_down()


def test_default_rate_limiter_matches_client_go():
    q = RateLimitingQueue("t-default")
    assert q.rate_limiter.when("a") == 0.005
    assert q.rate_limiter.when("a") == 0.01
    q.shut_down()


def test_queue_metrics_track_depth_and_durations():
    q = Queue("t-metrics")
    q.add("a")
    q.add("b")
    assert REGISTRY.get_sample_value("workqueue_depth", {"name": "t-metrics"}) == 2
    _drain(q, 2)
    assert REGISTRY.get_sample_value("workqueue_depth", {"name": "t-metrics"}) == 0
    assert REGISTRY.get_sample_value("workqueue_queue_duration_seconds_count", {"name": "t-metrics"}) == 2
    assert REGISTRY.get_sample_value("workqueue_work_duration_seconds_count", {"name": "t-metrics"}) == 2
