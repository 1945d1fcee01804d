"""The fake cloud's logic, stepped with a hand-driven clock against an in-memory API."""

from __future__ import annotations

import pytest
import yaml

from controller.api.machine import LABEL_INSTANCE_TYPE, LABEL_REGISTERED, TAINT_NOT_READY
from controller.runtime.fake import FakeClient
from controller.runtime.kinds import CONFIGMAPS, NODES
from provisioner.cloud import base
from provisioner.cloud.catalog import load_instance_types
from provisioner.cloud.fake import FakeCloud, instance_name
from provisioner.cloud.naming import is_valid_pool_name

A100 = "Standard_NC24ads_A100_v4"
NS = "fake-cloud"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def request(name: str = "ws0a1b2c3d4", uid: str = "uid-1", sku: str = A100) -> base.LaunchRequest:
    return base.LaunchRequest(
        machine_name=name,
        machine_uid=uid,
        instance_type=sku,
        labels={"kaito.sh/workspace": "phi-3"},
        taints=(base.Taint(key="sku", value="gpu", effect="NoSchedule"),),
        startup_taints=(base.Taint(key="example.com/gpu-init", effect="NoSchedule"),),
        requests={"nvidia.com/gpu": "1"},
    )


@pytest.fixture
def api() -> FakeClient:
    return FakeClient()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(api: FakeClient, clock: Clock, **kw) -> FakeCloud:  # type: ignore[no-untyped-def]
    return FakeCloud(api, namespace=NS, boot_delay=5, ready_delay=2, clock=clock, **kw)  # type: ignore[arg-type]


def node(api: FakeClient, name: str) -> dict | None:
    return api.objects.get(("nodes", None, name))


def taint_keys(n: dict) -> list[str]:
    return [t["key"] for t in n["spec"].get("taints") or []]


def test_boot_sequence(api: FakeClient, clock: Clock) -> None:
    cloud = make(api, clock)
    inst = cloud.create(request())
    iid = instance_name("ws0a1b2c3d4", "uid-1")
    assert inst.id == iid and inst.provider_id == f"fake://{iid}"
    assert inst.state == base.InstanceState.CREATING
    assert inst.capacity["nvidia.com/gpu"] == "1"
    assert inst.tags[base.TAG_MACHINE_NAME] == "ws0a1b2c3d4"

    clock.now += 4.9
    cloud.tick()
    assert node(api, iid) is None, "no node before the boot delay"

    clock.now += 0.2
    cloud.tick()
    n = node(api, iid)
    assert n is not None
    assert n["spec"]["providerID"] == f"fake://{iid}"
    assert n["metadata"]["labels"][LABEL_INSTANCE_TYPE] == A100
    assert n["metadata"]["labels"]["kaito.sh/workspace"] == "phi-3"
    assert n["status"]["conditions"][0]["status"] == "False"
    assert n["status"]["capacity"]["nvidia.com/gpu"] == "1"
    assert n["status"]["allocatable"]["nvidia.com/gpu"] == "0", "GPUs come with the device plugin"
    assert taint_keys(n) == ["sku", "example.com/gpu-init", TAINT_NOT_READY]
    assert cloud.get(iid).state == base.InstanceState.RUNNING

    clock.now += 2
    cloud.tick()
    n = node(api, iid)
    assert n["status"]["conditions"][0]["status"] == "True"
    assert n["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    assert taint_keys(n) == ["sku", "example.com/gpu-init"], "startup taints wait for registration"

    cloud.tick()
    assert taint_keys(node(api, iid)) == ["sku", "example.com/gpu-init"]
    api.patch(NODES, iid, {"metadata": {"labels": {LABEL_REGISTERED: "true"}}})
    cloud.tick()
    assert taint_keys(node(api, iid)) == ["sku"]


def test_create_is_idempotent_and_survives_a_restart(api: FakeClient, clock: Clock) -> None:
    first = make(api, clock)
    a = first.create(request())
    b = first.create(request())
    assert a == b
    assert len(api.list(CONFIGMAPS, NS)[0]) == 1

    restarted = make(api, clock)
    assert [i.id for i in restarted.list()] == [a.id]
    assert restarted.create(request()) == a
    clock.now += 5
    restarted.tick()
    assert node(api, a.id) is not None


def test_a_new_machine_incarnation_gets_a_new_instance(api: FakeClient, clock: Clock) -> None:
    cloud = make(api, clock)
    assert cloud.create(request(uid="u1")).id != cloud.create(request(uid="u2")).id


def test_injected_failures_per_sku_and_count(api: FakeClient, clock: Clock) -> None:
    cloud = make(api, clock)
    cloud.fail("quota", sku=A100)
    with pytest.raises(base.QuotaExceeded, match="quota"):
        cloud.create(request())
    cloud.create(request(name="other", sku="Standard_NC6s_v3"))  # other SKUs still launch

    cloud.fail("capacity", times=1)
    with pytest.raises(base.QuotaExceeded):  # the per-SKU failure wins for A100
        cloud.create(request())
    cloud.clear_failures()
    cloud.fail("capacity", times=1)
    with pytest.raises(base.InsufficientCapacity) as caught:
        cloud.create(request())
    assert caught.value.reason == "InsufficientCapacity"
    assert cloud.create(request()).instance_type == A100

    with pytest.raises(ValueError):
        cloud.fail("meteor")


def test_unknown_sku_is_unavailable(api: FakeClient, clock: Clock) -> None:
    with pytest.raises(base.SKUUnavailable):
        make(api, clock).create(request(sku="Standard_Nonexistent"))


def test_never_booting_instance(api: FakeClient, clock: Clock) -> None:
    cloud = make(api, clock)
    cloud.set_boot_delay(float("inf"), sku=A100)
    inst = cloud.create(request())
    clock.now += 10_000
    cloud.tick()
    assert node(api, inst.id) is None
    assert cloud.get(inst.id).state == base.InstanceState.CREATING


def test_delete_removes_node_and_instance_then_reports_not_found(api: FakeClient, clock: Clock) -> None:
    cloud = make(api, clock)
    inst = cloud.create(request())
    clock.now += 5
    cloud.tick()
    cloud.delete(inst.id)
    assert node(api, inst.id) is None
    assert cloud.list() == []
    with pytest.raises(base.NotFound):
        cloud.delete(inst.id)
    with pytest.raises(base.NotFound):
        cloud.get(inst.id)


def test_tick_deletes_nodes_whose_instance_is_gone(api: FakeClient, clock: Clock) -> None:
    cloud = make(api, clock)
    inst = cloud.create(request())
    clock.now += 5
    cloud.tick()
    api.delete(CONFIGMAPS, inst.id, NS)  # the VM vanished behind our back
    cloud.tick()
    assert node(api, inst.id) is None


def test_instance_names_are_valid_node_names() -> None:
    name = instance_name("a" * 253, "uid")
    assert len(name) <= 253 and name.startswith("fake-a")
    assert instance_name("x.", "u").startswith("fake-x-")
    assert not is_valid_pool_name(name)


def test_catalogue_agrees_with_the_presets_sku_table() -> None:
    with open("presets/gpu_skus.yaml") as f:
        presets = {s["name"]: s for s in yaml.safe_load(f)["skus"]}
    ours = {t.name: t for t in load_instance_types()}
    assert "Standard_Fake_GPU" in ours and "Standard_NC6s_v3" in ours and A100 in ours
    for name, t in ours.items():
        p = presets.get(name)
        assert p is not None, f"{name} is not in presets/gpu_skus.yaml"
        assert (t.gpu_count, t.gpu_memory_gib, t.cpu, t.memory_gib) == (
            p["gpu_count"],
            p["gpu_memory_gib"],
            p["vcpus"],
            p["memory_gib"],
        ), name
        assert t.capacity()["nvidia.com/gpu"] == str(t.gpu_count)
