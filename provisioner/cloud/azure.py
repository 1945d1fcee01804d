"""The Azure provider: one AKS agent pool of one VM per Machine, as Azure/gpu-provisioner does.

Why agent pools and not bare VMs: an AKS pool's VM joins the cluster by itself (bootstrap token,
kubelet config, GPU driver image), so launching a GPU node is a single ARM PUT. The pool name is
derived from the Machine name (``naming.agent_pool_name``) and the pool carries our ownership tags,
so after a restart the provisioner finds what it already created instead of creating it again.

Why nothing here waits for an LRO: a pool takes minutes to create and a worker thread must not
block that long. ``create`` sends the PUT and returns an instance without a providerID; the SDK's
poller keeps polling in its own thread and is kept only as a shortcut to the final error. The truth
is always the pool's ``provisioningState`` from a GET, which survives a restart. The providerID is
learnt from the Node that the pool's VM registers (``node_lookup``), as gpu-provisioner does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.core.polling import LROPoller
from azure.mgmt.containerservice import ContainerServiceClient
from azure.mgmt.containerservice.models import AgentPool

from controller.api.machine import LABEL_MACHINE_TYPE
from provisioner.cloud.base import (
    MANAGED_BY_VALUE,
    TAG_CREATED_AT,
    TAG_MACHINE_NAME,
    TAG_MACHINE_UID,
    TAG_MANAGED_BY,
    CloudError,
    CloudProvider,
    InProgress,
    Instance,
    InstanceState,
    InstanceType,
    InsufficientCapacity,
    LaunchRequest,
    NotFound,
    QuotaExceeded,
    SKUUnavailable,
    ownership_tags,
    parse_timestamp,
)
from provisioner.cloud.catalog import load_instance_types
from provisioner.cloud.naming import agent_pool_name

log = logging.getLogger(__name__)

LABEL_AGENTPOOL = "kubernetes.azure.com/agentpool"

# ARM error codes (and message fragments) by what they mean for a launch.
_QUOTA_CODES = {
    "QuotaExceeded",
    "InsufficientVCPUQuota",
    "ErrCode_InsufficientVCPUQuota",
    "OperationNotAllowed",
}
_CAPACITY_CODES = {
    "AllocationFailed",
    "ZonalAllocationFailed",
    "OverconstrainedAllocationRequest",
    "OverconstrainedZonalAllocationRequest",
    "SkuNotAvailableInZone",
}
_SKU_CODES = {
    "SkuNotAvailable",
    "SKUNotAvailable",
    "InvalidVMSize",
    "VMSizeNotSupported",
    "BadRequest_SkuNotAvailable",
}
_SKU_FRAGMENTS = ("is not allowed in your subscription in location", "not available in location")

_STATES = {
    "Creating": InstanceState.CREATING,
    "Updating": InstanceState.CREATING,
    "Scaling": InstanceState.CREATING,
    "Upgrading": InstanceState.CREATING,
    "Succeeded": InstanceState.RUNNING,
    "Deleting": InstanceState.DELETING,
    "Failed": InstanceState.FAILED,
    "Canceled": InstanceState.FAILED,
}


def classify_arm_error(code: str, message: str, status: int | None = None) -> CloudError:
    """The typed error for an ARM error code and message (from a response or a pool's provisioningError)."""
    text = f"{code}: {message}" if code else message
    lower = message.lower()
    if code == "NotFound" or status == 404:
        return NotFound(text)
    if code in _CAPACITY_CODES:
        return InsufficientCapacity(text)
    if code in _SKU_CODES or any(f in lower for f in _SKU_FRAGMENTS):
        return SKUUnavailable(text)
    if code in _QUOTA_CODES and (code != "OperationNotAllowed" or "quota" in lower):
        return QuotaExceeded(text)
    if status == 409 and "in progress" in lower:
        return InProgress(text)
    return CloudError(text, reason=code if code.isidentifier() else "CloudProviderError")


def map_azure_error(exc: Exception) -> CloudError:
    """Translate an SDK exception into our typed errors; the ARM code stays in the message."""
    if isinstance(exc, CloudError):
        return exc
    if isinstance(exc, ResourceNotFoundError):
        return NotFound(str(getattr(exc, "message", exc)))
    if isinstance(exc, ClientAuthenticationError):
        return CloudError(f"Azure authentication failed: {exc}", reason="AuthenticationFailed")
    if isinstance(exc, HttpResponseError):
        error = exc.error
        code = (error.code if error is not None else None) or ""
        message = (error.message if error is not None else None) or str(exc.message or exc)
        return classify_arm_error(code, message, exc.status_code)
    if isinstance(exc, AzureError):
        return CloudError(f"Azure request failed: {exc}", reason="CloudProviderError")
    raise exc


class AzureCloud(CloudProvider):
    """AKS agent pools in one cluster (``resource_group``/``cluster_name``)."""

    def __init__(
        self,
        client: ContainerServiceClient,
        resource_group: str,
        cluster_name: str,
        *,
        node_lookup: Callable[[str], str | None] | None = None,
        instance_types: list[InstanceType] | None = None,
    ) -> None:
        self._client = client
        self.resource_group = resource_group
        self.cluster_name = cluster_name
        self._node_lookup = node_lookup or (lambda _pool: None)
        types = instance_types if instance_types is not None else load_instance_types()
        self._types = {t.name: t for t in types if t.name.startswith("Standard_N")}
        self._pollers: dict[str, LROPoller[Any]] = {}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return "azure"

    def instance_types(self) -> list[InstanceType]:
        return list(self._types.values())

    def instance_id_for(self, machine_name: str, machine_uid: str) -> str:
        return agent_pool_name(machine_name)

    # --- verbs -------------------------------------------------------------------------------
    def create(self, req: LaunchRequest) -> Instance:
        pool_name = agent_pool_name(req.machine_name)
        self._raise_finished_poller_error(pool_name)
        pool = self._get_pool(pool_name)
        if pool is not None:
            return self._existing(pool, req)
        body = self._pool_body(req)
        try:
            poller = self._client.agent_pools.begin_create_or_update(
                self.resource_group, self.cluster_name, pool_name, body
            )
        except Exception as exc:
            raise map_azure_error(exc) from exc
        with self._lock:
            self._pollers[pool_name] = poller
        log.info(
            "azure: creating agent pool %s (%s) for machine %s",
            pool_name,
            req.instance_type,
            req.machine_name,
        )
        return self._to_instance(pool_name, body)

    def delete(self, instance_id: str) -> None:
        pool = self._get_pool(instance_id)
        if pool is None:
            with self._lock:
                self._pollers.pop(instance_id, None)
            raise NotFound(f"agent pool {instance_id} not found")
        if not _is_ours(pool):
            raise CloudError(
                f"agent pool {instance_id} is not managed by {MANAGED_BY_VALUE}; refusing to delete it"
            )
        if pool.provisioning_state == "Deleting":
            return
        try:
            poller = self._client.agent_pools.begin_delete(
                self.resource_group, self.cluster_name, instance_id
            )
        except Exception as exc:
            raise map_azure_error(exc) from exc
        with self._lock:
            self._pollers[instance_id] = poller
        log.info("azure: deleting agent pool %s", instance_id)

    def get(self, instance_id: str) -> Instance:
        pool = self._get_pool(instance_id)
        if pool is None:
            raise NotFound(f"agent pool {instance_id} not found")
        return self._to_instance(instance_id, pool)

    def list(self) -> list[Instance]:
        try:
            pools = list(self._client.agent_pools.list(self.resource_group, self.cluster_name))
        except Exception as exc:
            raise map_azure_error(exc) from exc
        return [self._to_instance(p.name or "", p) for p in pools if _is_ours(p)]

    # --- helpers -----------------------------------------------------------------------------
    def _existing(self, pool: AgentPool, req: LaunchRequest) -> Instance:
        """What an already existing pool of this name means for a create of ``req``."""
        name = pool.name or agent_pool_name(req.machine_name)
        tags = pool.tags or {}
        if not _is_ours(pool) or tags.get(TAG_MACHINE_NAME) != req.machine_name:
            raise CloudError(
                f"agent pool {name} already exists and does not belong to machine {req.machine_name}",
                reason="InstanceNameConflict",
            )
        state = pool.provisioning_state or ""
        if tags.get(TAG_MACHINE_UID) != req.machine_uid:
            # A pool of an earlier Machine with the same name: it must go before ours can exist.
            if state != "Deleting":
                self.delete(name)
            raise InProgress(f"agent pool {name} of an earlier machine {req.machine_name} is being deleted")
        if state == "Deleting":
            raise InProgress(f"agent pool {name} is being deleted")
        if state in ("Failed", "Canceled"):
            error = _provisioning_error(pool, name)
            # Start over: a failed pool is removed, the next create after backoff PUTs a fresh one.
            self.delete(name)
            raise error
        return self._to_instance(name, pool)

    def _raise_finished_poller_error(self, pool_name: str) -> None:
        """If the create LRO we started has finished with an error, surface that error once."""
        with self._lock:
            poller = self._pollers.get(pool_name)
            if poller is None or not poller.done():
                return
            self._pollers.pop(pool_name)
        try:
            poller.result(timeout=0)
        except Exception as exc:
            error = map_azure_error(exc)
            if not isinstance(error, NotFound):
                raise error from exc

    def _get_pool(self, pool_name: str) -> AgentPool | None:
        try:
            return self._client.agent_pools.get(self.resource_group, self.cluster_name, pool_name)
        except ResourceNotFoundError:
            return None
        except Exception as exc:
            error = map_azure_error(exc)
            if isinstance(error, NotFound):
                return None
            raise error from exc

    def _pool_body(self, req: LaunchRequest) -> AgentPool:
        labels = dict(req.labels)
        labels[LABEL_MACHINE_TYPE] = "gpu" if req.instance_type.startswith("Standard_N") else "cpu"
        body = AgentPool(
            count=1,
            vm_size=req.instance_type,
            os_type="Linux",
            mode="User",
            type_properties_type="VirtualMachineScaleSets",
            enable_auto_scaling=False,
            node_labels=labels,
            node_taints=[t.to_azure() for t in (*req.taints, *req.startup_taints)],
            tags=ownership_tags(req, datetime.now(UTC)),
        )
        if req.os_disk_gb:
            body.os_disk_size_gb = req.os_disk_gb
        return body

    def _to_instance(self, pool_name: str, pool: AgentPool) -> Instance:
        state = _STATES.get(pool.provisioning_state or "Creating", InstanceState.CREATING)
        provider_id = ""
        if state == InstanceState.RUNNING:
            provider_id = self._node_lookup(pool_name) or ""
        vm_size = pool.vm_size or ""
        sku = self._types.get(vm_size)
        tags = dict(pool.tags or {})
        return Instance(
            id=pool_name,
            provider_id=provider_id,
            instance_type=vm_size,
            state=state,
            capacity=sku.capacity() if sku else {},
            labels=dict(pool.node_labels or {}),
            tags=tags,
            created_at=parse_timestamp(tags.get(TAG_CREATED_AT)),
        )


def _is_ours(pool: AgentPool) -> bool:
    return (pool.tags or {}).get(TAG_MANAGED_BY) == MANAGED_BY_VALUE


def _provisioning_error(pool: AgentPool, name: str) -> CloudError:
    status = pool.properties.status if pool.properties is not None else None
    detail = status.provisioning_error if status is not None else None
    if detail is None:
        return CloudError(f"agent pool {name} failed to provision", reason="LaunchFailed")
    return classify_arm_error(detail.code or "", detail.message or "")


def from_environment(
    subscription_id: str,
    resource_group: str,
    cluster_name: str,
    *,
    node_lookup: Callable[[str], str | None] | None = None,
    instance_types: list[InstanceType] | None = None,
) -> AzureCloud:
    """The provider with ``DefaultAzureCredential`` (workload identity, managed identity, env, CLI)."""
    from azure.identity import DefaultAzureCredential

    # Bounded retries and timeouts: every call runs in a controller worker, which must not hang on
    # a flaky network for the SDK's default of up to minutes of backoff.
    client = ContainerServiceClient(
        DefaultAzureCredential(),
        subscription_id,
        retry_total=2,
        retry_backoff_max=4,
        connection_timeout=10,
        read_timeout=30,
    )
    return AzureCloud(
        client, resource_group, cluster_name, node_lookup=node_lookup, instance_types=instance_types
    )
