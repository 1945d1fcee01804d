"""The reconciler's ordering and retry rules, with an in-memory API and a recording provider.

The real end-to-end behaviour is in tests/integration/provisioner; these pin what is hard to see
there: nothing is launched before the finalizer is stored, failures back off exponentially and
reset on success, other provisioners' Machines are left alone, bad objects never raise.
"""

from __future__ import annotations

from controller.api.kinds import MACHINES
from controller.api.machine import (
    CONDITION_INITIALIZED,
    CONDITION_LAUNCHED,
    CONDITION_REGISTERED,
    FINALIZER_TERMINATION,
    LABEL_INSTANCE_TYPE,
)
from controller.api.nodeapi import MACHINE_API, NodeAPI
from controller.runtime import Request, Store
from controller.runtime.fake import FakeClient
from controller.runtime.kinds import NODES
from provisioner.cloud import base
from provisioner.indexes import install_indexes
from provisioner.machine_controller import MachineReconciler, Options


class RecordingCloud(base.CloudProvider):
    def __init__(self) -> None:
        self.creates: list[base.LaunchRequest] = []
        self.deletes: list[str] = []
        self.fail_with: base.CloudError | None = None
        self.gone: set[str] = set()

    @property
    def name(self) -> str:
        return "rec"

    def instance_id_for(self, machine_name: str, machine_uid: str) -> str:
        return f"i-{machine_name}"

    def create(self, req: base.LaunchRequest) -> base.Instance:
        self.creates.append(req)
        if self.fail_with is not None:
            raise self.fail_with
        iid = self.instance_id_for(req.machine_name, req.machine_uid)
        return base.Instance(id=iid, provider_id=f"rec://{iid}", instance_type=req.instance_type)

    def delete(self, instance_id: str) -> None:
        self.deletes.append(instance_id)
        if instance_id in self.gone:
            raise base.NotFound(instance_id)
        self.gone.add(instance_id)

    def get(self, instance_id: str) -> base.Instance:
        raise base.NotFound(instance_id)

    def list(self) -> list[base.Instance]:
        return []

    def instance_types(self) -> list[base.InstanceType]:
        return []


class Harness:
    """The reconciler over a FakeClient whose objects are mirrored into the stores by hand."""

    def __init__(self, node_api: NodeAPI = MACHINE_API, **options) -> None:  # type: ignore[no-untyped-def]
        self.api = FakeClient()
        self.cloud = RecordingCloud()
        self.kind = node_api.kind
        self.machines, self.nodes = Store(), Store()
        install_indexes(self.machines, self.nodes, node_api.model.LABEL_NODE_OF)
        self.rec = MachineReconciler(
            self.api,
            self.cloud,
            self.machines,
            self.nodes,
            options=Options(backoff_base=1, backoff_max=8, **options),
            api=node_api,
        )

    def sync(self) -> None:
        self.machines.replace(self.api.list(self.kind)[0])
        self.nodes.replace(self.api.list(NODES)[0])

    def reconcile(self, name: str = "m1"):  # type: ignore[no-untyped-def]
        self.sync()
        result = self.rec.reconcile(Request(None, name))
        self.sync()
        return result

    def machine(self, name: str = "m1") -> dict:
        return self.api.get(self.kind, name)


def machine(name: str = "m1", labels: dict | None = None, sku: str | None = "Standard_Fake_GPU") -> dict:
    reqs = [{"key": LABEL_INSTANCE_TYPE, "operator": "In", "values": [sku]}] if sku else []
    return {
        "apiVersion": "karpenter.sh/v1alpha5",
        "kind": "Machine",
        "metadata": {"name": name, "labels": labels or {}, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"requirements": reqs, "resources": {"requests": {"nvidia.com/gpu": "1"}}},
    }


def cond(obj: dict, type_: str) -> dict:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def test_finalizer_is_stored_before_anything_is_launched() -> None:
    h = Harness()
    h.api.create(MACHINES, machine())
    h.reconcile()
    assert h.machine()["metadata"]["finalizers"] == [FINALIZER_TERMINATION]
    assert h.cloud.creates == []
    h.reconcile()
    assert len(h.cloud.creates) == 1
    launched = cond(h.machine(), CONDITION_LAUNCHED)
    assert launched["status"] == "True"
    assert h.machine()["status"]["providerID"] == "rec://i-m1"
    assert cond(h.machine(), CONDITION_REGISTERED)["reason"] == "NodeNotFound"


def test_failures_back_off_exponentially_and_reset_on_success() -> None:
    h = Harness()
    h.api.create(MACHINES, machine())
    h.reconcile()
    h.cloud.fail_with = base.InsufficientCapacity("no A100 left in the region")
    delays = [h.reconcile().requeue_after for _ in range(5)]
    assert delays == [1, 2, 4, 8, 8]
    launched = cond(h.machine(), CONDITION_LAUNCHED)
    assert (launched["status"], launched["reason"]) == ("False", "InsufficientCapacity")
    assert launched["message"] == "no A100 left in the region"
    uid = h.machine()["metadata"]["uid"]
    assert h.rec.backoff.num_requeues(uid) == 5
    h.cloud.fail_with = None
    h.reconcile()
    assert cond(h.machine(), CONDITION_LAUNCHED)["status"] == "True"
    assert h.rec.backoff.num_requeues(uid) == 0  # the next failure starts at the base again


def test_machine_without_instance_type_is_not_retried() -> None:
    h = Harness()
    h.api.create(MACHINES, machine(sku=None))
    h.reconcile()
    result = h.reconcile()
    assert not result.requeue and not result.requeue_after
    assert cond(h.machine(), CONDITION_LAUNCHED)["reason"] == "InvalidMachine"
    assert h.cloud.creates == []


def test_unselected_machines_are_left_alone() -> None:
    h = Harness(machine_selector={"team": "ml"})
    h.api.create(MACHINES, machine("theirs"))
    h.api.create(MACHINES, machine("ours", labels={"team": "ml"}))
    h.reconcile("theirs")
    h.reconcile("ours")
    assert h.machine("theirs")["metadata"].get("finalizers") is None
    assert h.machine("ours")["metadata"]["finalizers"] == [FINALIZER_TERMINATION]


def test_unreadable_machine_does_not_raise() -> None:
    h = Harness()
    bad = machine()
    bad["spec"]["requirements"] = [{"key": "x", "operator": "Sometimes"}]
    h.api.create(MACHINES, bad)
    assert h.reconcile().requeue is False


def test_deletion_waits_for_the_cloud_then_drops_the_finalizer() -> None:
    h = Harness()
    h.api.create(MACHINES, machine())
    h.reconcile()
    h.reconcile()
    h.api.delete(MACHINES, "m1")  # our finalizer holds it: only deletionTimestamp is set
    first = h.reconcile()
    assert first.requeue_after == Options().delete_poll_interval and h.cloud.deletes == ["i-m1"]
    assert h.machine()["metadata"]["finalizers"] == [FINALIZER_TERMINATION]
    h.reconcile()
    assert h.cloud.deletes == ["i-m1", "i-m1"]
    assert ("machines", None, "m1") not in h.api.objects  # the last finalizer went: so did the Machine


def test_request_for_a_missing_machine_is_a_no_op() -> None:
    h = Harness()
    assert h.reconcile("m-gone").requeue is False


def _node_for(h: Harness, ready: bool) -> None:
    h.api.create(
        NODES,
        {
            "metadata": {"name": "n1", "labels": {}},
            "spec": {"providerID": "rec://i-m1", "taints": []},
            "status": {
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                "allocatable": {"nvidia.com/gpu": "1"},
            },
        },
    )


def test_a_registered_node_not_yet_initialized_is_polled_not_forgotten() -> None:
    # Node events normally wake the Machine; one lost across an API server outage must not
    # leave it waiting forever, so the reconcile asks to be looked at again on a timer.
    h = Harness()
    h.api.create(MACHINES, machine())
    h.reconcile()
    h.reconcile()  # launched
    _node_for(h, ready=False)
    waiting = h.reconcile()
    assert cond(h.machine(), CONDITION_REGISTERED)["status"] == "True"
    assert cond(h.machine(), CONDITION_INITIALIZED)["status"] == "Unknown"
    assert waiting.requeue_after == Options().init_poll_interval
    h.api.patch(NODES, "n1", {"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    done = h.reconcile()
    assert cond(h.machine(), CONDITION_INITIALIZED)["status"] == "True"
    assert done.requeue_after is None and done.requeue is False


def test_a_machine_deleted_under_a_reconcile_is_looked_at_again_without_error_backoff() -> None:
    h = Harness()
    h.api.create(MACHINES, machine())
    h.reconcile()
    h.sync()  # the cache still has the Machine ...
    h.api.patch(MACHINES, "m1", {"metadata": {"finalizers": None}})  # someone strips the finalizer
    h.api.delete(MACHINES, "m1")  # ... and deletes it: the API server no longer has it
    result = h.rec.reconcile(Request(None, "m1"))
    assert result.requeue_after == 1.0 and result.requeue is False
    h.sync()
    assert h.rec.reconcile(Request(None, "m1")).requeue_after is None
