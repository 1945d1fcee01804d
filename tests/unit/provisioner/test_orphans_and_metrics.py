"""The orphan sweep's decisions and the machines-by-phase collector (no API server)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from controller.runtime import Store
from controller.runtime.fake import FakeClient
from provisioner.cloud.base import LaunchRequest
from provisioner.cloud.fake import FakeCloud
from provisioner.metrics import MachinePhaseCollector
from provisioner.orphans import OrphanSweeper


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def launch(cloud: FakeCloud, name: str, uid: str) -> str:
    req = LaunchRequest(machine_name=name, machine_uid=uid, instance_type="Standard_Fake_GPU")
    return cloud.create(req).id


def test_sweep_deletes_only_old_instances_without_their_machine() -> None:
    clock = Clock()
    cloud = FakeCloud(FakeClient(), namespace="c", clock=clock)  # type: ignore[arg-type]
    machines = Store()
    machines.add({"metadata": {"name": "kept", "uid": "u-kept"}})
    machines.add({"metadata": {"name": "reborn", "uid": "u-new"}})
    kept = launch(cloud, "kept", "u-kept")
    orphan = launch(cloud, "gone", "u-gone")
    stale = launch(cloud, "reborn", "u-old")  # an earlier Machine of the same name
    sweeper = OrphanSweeper(cloud, machines, grace_period=60, clock=clock)

    clock.now += 30
    assert sweeper.sweep() == [], "inside the grace period"
    clock.now += 31
    assert sorted(sweeper.sweep()) == sorted([orphan, stale])
    assert [i.id for i in cloud.list()] == [kept]
    assert sweeper.sweep() == []


def test_phase_collector_counts_every_phase() -> None:
    machines = [
        {"metadata": {}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        {"metadata": {}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        {"metadata": {}, "status": {"conditions": [{"type": "MachineLaunched", "status": "False"}]}},
        {"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}},
    ]
    registry = CollectorRegistry()
    registry.register(MachinePhaseCollector(lambda: machines))

    def value(phase: str) -> float | None:
        return registry.get_sample_value("kaito_provisioner_machines", {"phase": phase})

    assert (value("Ready"), value("LaunchFailed"), value("Deleting"), value("Pending")) == (2, 1, 1, 0)
