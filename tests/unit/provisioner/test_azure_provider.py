"""The Azure provider against the real ContainerServiceClient with a fake ARM at the transport.

What is checked: the exact requests (URL, api-version, auth header, AgentPool body), LRO handling
without blocking, idempotent create across restarts, and how ARM errors become typed errors.
"""

from __future__ import annotations

import contextlib

import pytest
from azure.mgmt.containerservice import ContainerServiceClient
from azure_fake_arm import FakeARM, FakeCredential

from provisioner.cloud import base
from provisioner.cloud.azure import AzureCloud
from provisioner.cloud.base import InstanceState, LaunchRequest, Taint

API_VERSION = "2026-08-01"


def make_cloud(arm: FakeARM, node_lookup=None) -> AzureCloud:  # type: ignore[no-untyped-def]
    client = ContainerServiceClient(FakeCredential(), arm.subscription, transport=arm, polling_interval=0)
    return AzureCloud(client, arm.resource_group, arm.cluster, node_lookup=node_lookup)


def request(
    name: str = "ws0a1b2c3d4", uid: str = "uid-1", sku: str = "Standard_NC24ads_A100_v4"
) -> LaunchRequest:
    return LaunchRequest(
        machine_name=name,
        machine_uid=uid,
        instance_type=sku,
        labels={"kaito.sh/workspace": "phi-3", "karpenter.sh/provisioner-name": "default"},
        taints=(Taint(key="sku", value="gpu", effect="NoSchedule"),),
        startup_taints=(Taint(key="nvidia.com/gpu-init", effect="NoExecute"),),
        requests={"nvidia.com/gpu": "1"},
        os_disk_gb=256,
    )


def wait_ops(cloud: AzureCloud) -> None:
    """Let the SDK's polling threads finish (their errors are the provider's to report, not ours)."""
    for poller in list(cloud._pollers.values()):
        with contextlib.suppress(Exception):
            poller.wait(5)


@pytest.fixture
def arm() -> FakeARM:
    return FakeARM()


def test_create_sends_one_agent_pool_put_with_our_shape(arm: FakeARM) -> None:
    cloud = make_cloud(arm)
    inst = cloud.create(request())

    assert inst.id == "ws0a1b2c3d4"
    assert inst.state == InstanceState.CREATING
    assert inst.provider_id == ""
    [put] = arm.of("PUT")
    assert put.path == f"{arm.pools_path}/ws0a1b2c3d4"
    assert put.url.startswith("https://management.azure.com/subscriptions/sub-1/resourceGroups/rg-1/")
    assert put.query["api-version"] == [API_VERSION]
    assert put.headers["Authorization"] == "Bearer fake-token"
    props = put.body["properties"]
    assert props["vmSize"] == "Standard_NC24ads_A100_v4"
    assert props["count"] == 1
    assert props["osType"] == "Linux"
    assert props["mode"] == "User"
    assert props["type"] == "VirtualMachineScaleSets"
    assert props["enableAutoScaling"] is False
    assert props["osDiskSizeGB"] == 256
    assert props["nodeLabels"] == {
        "kaito.sh/workspace": "phi-3",
        "karpenter.sh/provisioner-name": "default",
        "kaito.sh/machine-type": "gpu",
    }
    assert props["nodeTaints"] == ["sku=gpu:NoSchedule", "nvidia.com/gpu-init:NoExecute"]
    tags = props["tags"]
    assert tags[base.TAG_MANAGED_BY] == base.MANAGED_BY_VALUE
    assert tags[base.TAG_MACHINE_NAME] == "ws0a1b2c3d4"
    assert tags[base.TAG_MACHINE_UID] == "uid-1"
    assert base.TAG_CREATED_AT in tags
    assert all("/" not in key for key in tags), "ARM tag names may not contain '/'"


def test_lro_is_polled_in_background_and_create_is_idempotent(arm: FakeARM) -> None:
    arm.polls = 2
    node_ids = {
        "ws0a1b2c3d4": "azure:///subscriptions/sub-1/.../aks-ws0a1b2c3d4-12345678-vmss/virtualMachines/0"
    }
    cloud = make_cloud(arm, node_lookup=node_ids.get)
    cloud.create(request())
    wait_ops(cloud)
    op_polls = [r for r in arm.of("GET") if "/operations/" in r.path]
    assert len(op_polls) == 3  # InProgress, InProgress, Succeeded

    inst = cloud.create(request())  # the reconciler calls again; no second PUT
    assert len(arm.of("PUT")) == 1
    assert inst.state == InstanceState.RUNNING
    assert inst.provider_id == node_ids["ws0a1b2c3d4"]
    assert inst.capacity["nvidia.com/gpu"] == "1"
    assert inst.machine_name == "ws0a1b2c3d4"


def test_running_pool_without_registered_node_has_no_provider_id_yet(arm: FakeARM) -> None:
    cloud = make_cloud(arm)
    cloud.create(request())
    wait_ops(cloud)
    inst = cloud.create(request())
    assert inst.state == InstanceState.RUNNING and inst.provider_id == ""


def test_restart_finds_the_pool_instead_of_creating_another(arm: FakeARM) -> None:
    make_cloud(arm).create(request())  # first process: PUT sent, then it "crashes"
    restarted = make_cloud(arm)
    inst = restarted.create(request())
    assert len(arm.of("PUT")) == 1
    assert inst.id == "ws0a1b2c3d4"
    assert [i.id for i in restarted.list()] == ["ws0a1b2c3d4"]


@pytest.mark.parametrize(
    ("status", "code", "message", "error"),
    [
        (400, "QuotaExceeded", "Operation results in exceeding quota limits of Core.", base.QuotaExceeded),
        (
            409,
            "OperationNotAllowed",
            "Operation could not be completed as it results in exceeding approved standardNCADSA100v4Family "
            "Cores quota. Current Limit: 0",
            base.QuotaExceeded,
        ),
        (
            400,
            "SkuNotAvailable",
            "The requested VM size Standard_NC24ads_A100_v4 is not available.",
            base.SKUUnavailable,
        ),
        (
            400,
            "BadRequest",
            "The VM size of Standard_ND96isr_H100_v5 is not allowed in your subscription in location 'x'.",
            base.SKUUnavailable,
        ),
        (
            409,
            "AllocationFailed",
            "Allocation failed. We do not have sufficient capacity.",
            base.InsufficientCapacity,
        ),
        (400, "InvalidParameter", "nodeLabels are invalid", base.CloudError),
    ],
)
def test_put_errors_become_typed_errors(
    arm: FakeARM, status: int, code: str, message: str, error: type[base.CloudError]
) -> None:
    cloud = make_cloud(arm)
    arm.fail_next_put(status, code, message)
    with pytest.raises(error) as caught:
        cloud.create(request())
    assert type(caught.value) is error
    assert code in caught.value.message and message in caught.value.message


def test_async_allocation_failure_surfaces_on_the_next_create(arm: FakeARM) -> None:
    cloud = make_cloud(arm)
    arm.fail_async("AllocationFailed", "Allocation failed. Please try another size or region.")
    cloud.create(request())
    wait_ops(cloud)
    with pytest.raises(base.InsufficientCapacity) as caught:
        cloud.create(request())
    assert caught.value.reason == "InsufficientCapacity"
    assert "AllocationFailed" in caught.value.message


def test_failed_pool_found_after_restart_raises_its_error_and_is_removed(arm: FakeARM) -> None:
    arm.add_pool(
        "ws0a1b2c3d4",
        state="Failed",
        tags={
            base.TAG_MANAGED_BY: base.MANAGED_BY_VALUE,
            base.TAG_MACHINE_NAME: "ws0a1b2c3d4",
            base.TAG_MACHINE_UID: "uid-1",
        },
        vmSize="Standard_NC24ads_A100_v4",
        status={"provisioningError": {"code": "QuotaExceeded", "message": "no cores left"}},
    )
    cloud = make_cloud(arm)
    with pytest.raises(base.QuotaExceeded, match="no cores left"):
        cloud.create(request())
    assert len(arm.of("DELETE")) == 1
    wait_ops(cloud)
    inst = cloud.create(request())  # after the backoff: a fresh pool
    assert inst.state == InstanceState.CREATING and len(arm.of("PUT")) == 1


def test_delete_until_not_found(arm: FakeARM) -> None:
    arm.polls = 1
    cloud = make_cloud(arm)
    cloud.create(request())
    wait_ops(cloud)

    # the SDK polls from its own thread with no delay: keep the delete in flight while we look
    arm.frozen = True
    cloud.delete("ws0a1b2c3d4")
    [delete] = arm.of("DELETE")
    assert delete.path == f"{arm.pools_path}/ws0a1b2c3d4"
    assert delete.query["api-version"] == [API_VERSION]
    assert arm.pools["ws0a1b2c3d4"]["properties"]["provisioningState"] == "Deleting"
    cloud.delete("ws0a1b2c3d4")  # still deleting: no second DELETE
    assert len(arm.of("DELETE")) == 1
    arm.frozen = False
    wait_ops(cloud)
    with pytest.raises(base.NotFound):
        cloud.delete("ws0a1b2c3d4")
    with pytest.raises(base.NotFound):
        cloud.get("ws0a1b2c3d4")


def test_pools_that_are_not_ours_are_never_touched(arm: FakeARM) -> None:
    arm.add_pool("nodepool1", vmSize="Standard_D4s_v5")
    arm.add_pool("ws0a1b2c3d4", tags={base.TAG_MANAGED_BY: "someone-else"}, vmSize="Standard_NC6s_v3")
    cloud = make_cloud(arm)
    assert cloud.list() == []
    with pytest.raises(base.CloudError) as caught:
        cloud.create(request())
    assert caught.value.reason == "InstanceNameConflict"
    with pytest.raises(base.CloudError):
        cloud.delete("nodepool1")
    assert arm.of("PUT") == [] and arm.of("DELETE") == []


def test_pool_of_an_earlier_machine_with_the_same_name_is_deleted_first(arm: FakeARM) -> None:
    cloud = make_cloud(arm)
    cloud.create(request(uid="old-uid"))
    wait_ops(cloud)
    with pytest.raises(base.InProgress):
        cloud.create(request(uid="new-uid"))
    assert len(arm.of("DELETE")) == 1
    wait_ops(cloud)
    inst = cloud.create(request(uid="new-uid"))
    assert inst.machine_uid == "new-uid" and len(arm.of("PUT")) == 2


def test_list_returns_only_our_pools(arm: FakeARM) -> None:
    arm.add_pool("nodepool1", vmSize="Standard_D4s_v5")
    cloud = make_cloud(arm)
    cloud.create(request(name="ws1"))
    cloud.create(request(name="ws2", uid="uid-2"))
    listed = sorted(cloud.list(), key=lambda i: i.id)
    assert [(i.id, i.machine_name) for i in listed] == [("ws1", "ws1"), ("ws2", "ws2")]
    assert all(i.created_at is not None for i in listed)
    [list_call] = arm.of("GET", "/agentPools")
    assert list_call.query["api-version"] == [API_VERSION]


def test_get_missing_pool_is_not_found(arm: FakeARM) -> None:
    with pytest.raises(base.NotFound):
        make_cloud(arm).get("nosuchpool")


def test_instance_types_are_the_azure_gpu_skus() -> None:
    cloud = make_cloud(FakeARM())
    names = {t.name for t in cloud.instance_types()}
    assert {"Standard_NC6s_v3", "Standard_NC24ads_A100_v4"} <= names
    assert "Standard_Fake_GPU" not in names
