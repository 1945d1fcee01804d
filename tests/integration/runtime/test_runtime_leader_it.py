"""Leader election on a real coordination.k8s.io/v1 Lease: never two leaders; fast takeover."""

from __future__ import annotations

import threading
import time

import pytest
from rt_helpers import wait_for

from controller.runtime import LEASES, Client, LeaderElector

pytestmark = pytest.mark.integration

LEASE = 3.0
RENEW = 2.0
RETRY = 0.25


class Monitor:
    """Samples every candidate's is_leader every few ms and counts moments with two leaders."""

    def __init__(self, *electors: LeaderElector) -> None:
        self.electors = list(electors)
        self.overlaps = 0
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if sum(e.is_leader for e in list(self.electors)) > 1:
                self.overlaps += 1
            self.samples += 1
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        self._t.join(2)


def candidate(client: Client, ns: str, identity: str, events: list, **kw) -> LeaderElector:  # type: ignore[no-untyped-def]
    return LeaderElector(
        client,
        "rt-lease",
        ns,
        identity=identity,
        lease_duration=LEASE,
        renew_deadline=RENEW,
        retry_period=RETRY,
        on_started_leading=lambda: events.append(("start", identity, time.monotonic())),
        on_stopped_leading=lambda: events.append(("stop", identity, time.monotonic())),
        **kw,
    )


def test_two_candidates_never_both_lead_and_the_second_takes_over_after_release(rt_client: Client, ns: str):
    events: list = []
    a = candidate(rt_client, ns, "a", events).start()
    wait_for(lambda: a.is_leader, timeout=10, what="a to lead")
    b = candidate(rt_client, ns, "b", events).start()
    mon = Monitor(a, b)
    try:
        time.sleep(LEASE * 1.5)  # a renews several times; b must stay a follower past a lease duration
        assert a.is_leader and not b.is_leader
        assert b.leader == "a"
        lease = rt_client.get(LEASES, "rt-lease", ns)
        assert lease["spec"]["holderIdentity"] == "a"

        t0 = time.monotonic()
        a.stop()  # clean stop: steps down, then releases the lease
        wait_for(lambda: b.is_leader, timeout=LEASE, interval=0.01, what="b to take over")
        takeover = time.monotonic() - t0
        assert takeover < LEASE, takeover
        lease = rt_client.get(LEASES, "rt-lease", ns)
        assert lease["spec"]["holderIdentity"] == "b"
        assert lease["spec"]["leaseTransitions"] >= 1
        assert mon.overlaps == 0 and mon.samples > 100
        kinds = [(k, who) for k, who, _ in events]
        assert kinds == [("start", "a"), ("stop", "a"), ("start", "b")]
        stop_a = next(t for k, who, t in events if (k, who) == ("stop", "a"))
        start_b = next(t for k, who, t in events if (k, who) == ("start", "b"))
        assert stop_a < start_b
    finally:
        mon.stop()
        a.stop()
        b.stop()
    assert rt_client.get(LEASES, "rt-lease", ns)["spec"].get("holderIdentity") in (None, "")


def test_takeover_after_the_leader_dies_waits_for_expiry_but_not_longer(rt_client: Client, ns: str):
    events: list = []
    # release_on_cancel=False: stopping it looks like a crash to everybody else (lease left behind)
    a = candidate(rt_client, ns, "a", events, release_on_cancel=False).start()
    wait_for(lambda: a.is_leader, timeout=10, what="a to lead")
    b = candidate(rt_client, ns, "b", events).start()
    mon = Monitor(a, b)
    try:
        time.sleep(1.0)
        t0 = time.monotonic()
        a.stop()
        assert rt_client.get(LEASES, "rt-lease", ns)["spec"]["holderIdentity"] == "a"
        wait_for(lambda: b.is_leader, timeout=LEASE + 4 * RETRY + 3, interval=0.01, what="b to take over")
        takeover = time.monotonic() - t0
        # b may only take an unreleased lease once it has looked unchanged for a whole lease duration
        # (measured from b's last sight of a renewal, up to one retry before a died), and takes it on
        # its next retry after that; the slack is for request latency on a loaded machine
        assert LEASE - RETRY - 0.5 <= takeover <= LEASE + 4 * RETRY + 1.0, takeover
        assert mon.overlaps == 0
    finally:
        mon.stop()
        a.stop()
        b.stop()


def test_leader_steps_down_when_it_cannot_renew(rt_client: Client, ns: str):
    events: list = []
    a = candidate(rt_client, ns, "a", events).start()
    wait_for(lambda: a.is_leader, timeout=10, what="a to lead")
    # somebody else grabs the lease behind a's back (as after a long pause of a's process)
    lease = rt_client.get(LEASES, "rt-lease", ns)
    lease["spec"]["holderIdentity"] = "intruder"
    rt_client.update(LEASES, lease)
    wait_for(lambda: not a.is_leader, timeout=RENEW + 2, what="a to step down")
    a.stop()
    assert [(k, who) for k, who, _ in events] == [("start", "a"), ("stop", "a")]
