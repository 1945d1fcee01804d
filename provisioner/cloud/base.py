"""The contract between the Machine controller and a cloud: what an instance is, what can fail.

Why a separate module: the controller must stay ignorant of any one cloud (Azure agent pools,
the fake kwok-style cloud, whatever comes next), and tests must be able to swap providers. The
shape follows Karpenter's v1alpha5 ``CloudProvider`` (create/delete/get/list/instance types/
drift/name) with one deliberate difference: ``create`` must not block a worker, so a provider may
return an instance that is still coming up (``provider_id == ""``) and the controller calls
``create`` again later. That makes ``create`` idempotent by contract: a second call for the same
Machine (same name and uid) returns the same instance instead of launching another one, which is
what keeps a provisioner restart from duplicating VMs.
"""

from __future__ import annotations

import abc
import enum
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

# Tag keys on every instance we create. ARM tag names may not contain "/", so these are plain
# dashed words rather than Kubernetes-style prefixed keys; the fake cloud uses the same keys.
TAG_MANAGED_BY = "kaito-managed-by"
TAG_MACHINE_NAME = "kaito-machine-name"
TAG_MACHINE_UID = "kaito-machine-uid"
TAG_CREATED_AT = "kaito-creation-timestamp"
MANAGED_BY_VALUE = "kaito-provisioner"

GPU_RESOURCE = "nvidia.com/gpu"


class CloudError(Exception):
    """A provider failure. ``reason`` is a CamelCase word for conditions, events and metrics.

    ``retryable`` says whether calling again later may succeed without anyone changing anything
    (capacity comes back; a quota or a SKU that the region does not sell does not).
    """

    reason: str = "LaunchFailed"
    retryable: bool = True

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InsufficientCapacity(CloudError):
    """The cloud has no capacity for this SKU right now (Azure: AllocationFailed, ZonalAllocationFailed)."""

    reason = "InsufficientCapacity"


class QuotaExceeded(CloudError):
    """The subscription's quota for this VM family is used up; a person must raise it."""

    reason = "QuotaExceeded"
    retryable = False


class SKUUnavailable(CloudError):
    """The SKU is unknown, not offered in the location or not allowed for the subscription."""

    reason = "SKUUnavailable"
    retryable = False


class NotFound(CloudError):
    """The instance does not exist (any more). ``delete`` raises it once an instance is gone."""

    reason = "NotFound"


class InProgress(CloudError):
    """The cloud is busy with this instance (a previous incarnation is still being deleted); retry soon."""

    reason = "InProgress"


class InstanceState(enum.StrEnum):
    """Where an instance is in its life, as far as the cloud can tell."""

    CREATING = "Creating"
    RUNNING = "Running"
    DELETING = "Deleting"
    FAILED = "Failed"


class Taint(BaseModel):
    """A node taint, as in ``corev1.Taint`` (without timeAdded)."""

    model_config = ConfigDict(frozen=True)

    key: str
    value: str = ""
    effect: str

    def to_k8s(self) -> dict[str, str]:
        out = {"key": self.key, "effect": self.effect}
        if self.value:
            out["value"] = self.value
        return out

    def to_azure(self) -> str:
        """AKS ``nodeTaints`` entries are ``key=value:Effect``."""
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


class LaunchRequest(BaseModel):
    """What a provider needs from a Machine to launch one instance for it.

    Built from the Machine object by the controller (see ``provisioner.machine``), so providers
    never parse Kubernetes objects themselves.
    """

    model_config = ConfigDict(frozen=True)

    machine_name: str
    machine_uid: str
    instance_type: str
    labels: dict[str, str] = Field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    startup_taints: tuple[Taint, ...] = ()
    requests: dict[str, str] = Field(default_factory=dict)
    os_disk_gb: int | None = None


class Instance(BaseModel):
    """One cloud instance as the provider sees it.

    ``id`` is the cloud's own handle (an AKS agent pool name, a fake VM name); ``provider_id`` is
    what the kubelet puts in ``node.spec.providerID`` and is empty until the cloud knows it.
    ``tags`` carry our ownership marks (``TAG_*``), which is how instances are found again after
    a restart and how the orphan sweep tells ours from everyone else's.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    provider_id: str = ""
    instance_type: str
    state: InstanceState = InstanceState.RUNNING
    capacity: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    created_at: datetime | None = None

    @property
    def machine_name(self) -> str:
        return self.tags.get(TAG_MACHINE_NAME, "")

    @property
    def machine_uid(self) -> str:
        return self.tags.get(TAG_MACHINE_UID, "")


class InstanceType(BaseModel):
    """One SKU of the catalogue: what a node of this type offers.

    ``gpu_memory_gib`` is per GPU, as in ``presets/gpu_skus.yaml`` (the two tables must agree).
    """

    model_config = ConfigDict(frozen=True)

    name: str
    gpu_count: int = 0
    gpu_memory_gib: int = 0
    gpu_model: str = ""
    cpu: int
    memory_gib: int
    price: float = 0.0
    zones: tuple[str, ...] = ()
    architecture: str = "amd64"

    def capacity(self) -> dict[str, str]:
        """The node capacity a kubelet on this SKU reports (``nvidia.com/gpu`` only for GPU SKUs)."""
        cap = {"cpu": str(self.cpu), "memory": f"{self.memory_gib}Gi", "pods": "110"}
        if self.gpu_count:
            cap[GPU_RESOURCE] = str(self.gpu_count)
        return cap


TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # RFC 3339 in UTC, as metav1.Time writes it


def parse_timestamp(value: str | None) -> datetime | None:
    """A ``2026-01-02T03:04:05Z`` timestamp (tags, creationTimestamp); None if absent or unreadable."""
    if not value:
        return None
    try:
        return datetime.strptime(value, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def ownership_tags(req: LaunchRequest, created_at: datetime) -> dict[str, str]:
    """The tags every provider stamps on an instance it launches for ``req``."""
    return {
        TAG_MANAGED_BY: MANAGED_BY_VALUE,
        TAG_MACHINE_NAME: req.machine_name,
        TAG_MACHINE_UID: req.machine_uid,
        TAG_CREATED_AT: created_at.astimezone(UTC).strftime(TIMESTAMP_FORMAT),
    }


class CloudProvider(abc.ABC):
    """The verbs the Machine controller and the orphan sweep use.

    Every method may raise ``CloudError`` (or a subclass); anything else is a bug.
    """

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Short provider name for metrics and logs ("azure", "fake")."""

    @abc.abstractmethod
    def create(self, req: LaunchRequest) -> Instance:
        """Launch (or find the already launched) instance for ``req``; must not block for long.

        Returns an instance with ``provider_id == ""`` while the cloud is still creating it.
        """

    @abc.abstractmethod
    def delete(self, instance_id: str) -> None:
        """Start or continue deleting ``instance_id``; raise ``NotFound`` once it is gone."""

    @abc.abstractmethod
    def get(self, instance_id: str) -> Instance:
        """The instance with this id; ``NotFound`` if there is none."""

    @abc.abstractmethod
    def list(self) -> list[Instance]:
        """Every instance carrying our ownership tag (and nothing else)."""

    @abc.abstractmethod
    def instance_types(self) -> list[InstanceType]:
        """The SKUs this provider can launch."""

    @abc.abstractmethod
    def instance_id_for(self, machine_name: str, machine_uid: str) -> str:
        """The id ``create`` uses for this Machine.

        Instances are named deterministically from the Machine so that the controller can find
        (and delete) an instance even when it crashed before recording the providerID.
        """

    def is_drifted(self, instance: Instance, req: LaunchRequest) -> str:
        """A reason why ``instance`` no longer matches ``req``, or "" when it does."""
        if instance.instance_type != req.instance_type:
            return "InstanceTypeChanged"
        return ""
