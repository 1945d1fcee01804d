"""Stages return outcomes: Node writes follow the stored status, a deleted Machine gets no status
write after its delete, and cloud failures back off by the reconciler's RateLimiter."""

from __future__ import annotations

from collections.abc import Hashable

from test_machine_reconciler import Harness, cond, machine

from controller.api.kinds import MACHINES
from controller.api.machine import (
    CONDITION_INITIALIZED,
    CONDITION_REGISTERED,
    FINALIZER_TERMINATION,
    LABEL_INITIALIZED,
    LABEL_MACHINE_NAME,
)
from controller.runtime import Conflict, Request, Result
from controller.runtime.kinds import NODES
from provisioner.cloud import base
from provisioner.machine_controller import MachineReconciler


def launched(**options) -> Harness:  # type: ignore[no-untyped-def]
    h = Harness(**options)
    h.api.create(MACHINES, machine())
    h.reconcile()  # the finalizer
    h.reconcile()  # launched; no Node yet
    return h


def ready_node(h: Harness) -> None:
    h.api.create(NODES, {
        "metadata": {"name": "n1", "labels": {}},
        "spec": {"providerID": "rec://i-m1", "taints": []},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "allocatable": {"nvidia.com/gpu": "1"},
        },
    })


def writes(h: Harness) -> list[tuple[str, str]]:
    return [(c.verb, c.plural) for c in h.api.calls if c.verb not in ("get", "list")]


def test_node_writes_follow_the_status_write() -> None:
    h = launched()
    ready_node(h)
    h.sync()
    h.api.calls.clear()
    assert h.rec.reconcile(Request(None, "m1")) == Result()  # registered and initialized at once
    assert writes(h) == [("update_status", "machines"), ("update", "nodes"), ("patch", "nodes")]
    node = h.api.get(NODES, "n1")
    assert FINALIZER_TERMINATION in node["metadata"]["finalizers"]
    assert node["metadata"]["labels"][LABEL_MACHINE_NAME] == "m1"
    assert node["metadata"]["labels"][LABEL_INITIALIZED] == "true"


def test_a_status_write_that_conflicts_writes_no_node() -> None:
    h = launched()
    ready_node(h)
    h.sync()
    h.api.conflict("update_status", MACHINES)
    h.api.calls.clear()
    assert h.rec.reconcile(Request(None, "m1")).requeue  # stale cache: look again
    assert writes(h) == [("update_status", "machines")]
    assert not h.api.get(NODES, "n1")["metadata"].get("finalizers")
    h.reconcile()
    assert cond(h.machine(), CONDITION_INITIALIZED)["status"] == "True"
    assert FINALIZER_TERMINATION in h.api.get(NODES, "n1")["metadata"]["finalizers"]


def test_a_node_write_that_failed_after_the_status_was_stored_is_redone() -> None:
    h = launched()
    ready_node(h)
    h.api.fail("update", Conflict(409, "Conflict", "the kubelet was first"), kind=NODES)
    assert h.reconcile().requeue
    assert cond(h.machine(), CONDITION_REGISTERED)["status"] == "True"  # stored ...
    assert not h.api.get(NODES, "n1")["metadata"].get("finalizers")  # ... but the Node not adopted
    h.reconcile()  # registered: adoption is checked again
    node = h.api.get(NODES, "n1")
    assert FINALIZER_TERMINATION in node["metadata"]["finalizers"]
    assert node["metadata"]["labels"][LABEL_INITIALIZED] == "true"


def test_a_machine_deleted_by_a_stage_gets_no_status_write_after_the_delete() -> None:
    h = Harness(registration_ttl=0)  # no Node will ever be in time
    h.api.create(MACHINES, machine())
    h.reconcile()
    h.api.calls.clear()
    assert h.reconcile() == Result()
    machine_writes = [verb for verb, plural in writes(h) if plural == "machines"]
    assert machine_writes == ["update_status", "delete"]
    gone = h.machine()
    assert gone["metadata"]["deletionTimestamp"]  # our finalizer holds it until the cloud is clean
    assert cond(gone, CONDITION_REGISTERED)["reason"] == "RegistrationTimeout"


class FixedBackoff:
    """A RateLimiter that always answers 42 s and remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[Hashable] = []
        self.forgotten: list[Hashable] = []

    def when(self, item: Hashable) -> float:
        self.asked.append(item)
        return 42.0

    def forget(self, item: Hashable) -> None:
        self.forgotten.append(item)

    def num_requeues(self, item: Hashable) -> int:
        return self.asked.count(item)


def test_cloud_failures_back_off_by_the_given_rate_limiter() -> None:
    h = Harness()
    backoff = FixedBackoff()
    h.rec = MachineReconciler(h.api, h.cloud, h.machines, h.nodes, backoff=backoff)
    h.api.create(MACHINES, machine())
    h.reconcile()
    uid = h.machine()["metadata"]["uid"]
    h.cloud.fail_with = base.QuotaExceeded("no cores left")
    assert h.reconcile().requeue_after == 42.0 and backoff.asked == [uid]
    h.cloud.fail_with = None
    h.reconcile()
    assert backoff.forgotten[-1] == uid
