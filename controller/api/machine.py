"""Karpenter-core ``Machine`` (karpenter.sh/v1alpha5, cluster-scoped): one GPU node asked of the cloud.

Shape from karpenter@6a5c00a35:pkg/apis/v1alpha5/machine*.go (see shared/research/karpenter.md §1.1);
the CRD is Kaito v0.3.2's (config/crd/karpenter.sh_machines.yaml). Conditions follow the
Kaito/gpu-provisioner era: MachineLaunched -> MachineRegistered -> MachineInitialized, summarised
by Ready.

``NodeRequest`` is what a Machine and Karpenter v1's ``NodeClaim`` (controller/api/nodeclaim.py)
share: requirements, taints and resources asked for, the node and capacity that came, and the
launch pipeline's conditions under each API's own names (class variables). The Workspace
controller and the provisioner are written against it, so one lifecycle serves both shapes.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from controller.api.meta import Condition, K8sModel, K8sObject

GROUP = "karpenter.sh"
VERSION = "v1alpha5"

# The Machine vocabulary, in one place: the Workspace controller, the provisioner, its clouds and
# the tests must agree on these strings (Karpenter v1alpha5 names, so that kubectl users and Kaito
# see what they expect).
FINALIZER_TERMINATION = "karpenter.sh/termination"

LABEL_PROVISIONER_NAME = "karpenter.sh/provisioner-name"
LABEL_MACHINE_TYPE = "kaito.sh/machine-type"
LABEL_MACHINE_NAME = "karpenter.sh/machine-name"
LABEL_REGISTERED = "karpenter.sh/registered"
LABEL_INITIALIZED = "karpenter.sh/initialized"
LABEL_CAPACITY_TYPE = "karpenter.sh/capacity-type"
# Well-known Node labels a Machine's requirements and its Node carry.
LABEL_INSTANCE_TYPE = "node.kubernetes.io/instance-type"
LABEL_ZONE = "topology.kubernetes.io/zone"
LABEL_ARCH = "kubernetes.io/arch"
LABEL_OS = "kubernetes.io/os"
LABEL_HOSTNAME = "kubernetes.io/hostname"

# Condition types (Karpenter's knative "living" set rolls up into Ready).
CONDITION_LAUNCHED = "MachineLaunched"
CONDITION_REGISTERED = "MachineRegistered"
CONDITION_INITIALIZED = "MachineInitialized"
CONDITION_READY = "Ready"

# Taints a node carries while it boots; initialization waits for them to go (Karpenter's list).
TAINT_NOT_READY = "node.kubernetes.io/not-ready"
EPHEMERAL_TAINT_KEYS = (
    TAINT_NOT_READY,
    "node.kubernetes.io/unreachable",
    "node.cloudprovider.kubernetes.io/uninitialized",
)

# A resource quantity: 16, "16Gi", "500m".
Quantity = int | str


class NodeSelectorRequirement(K8sModel):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: list[str] | None = None


class Taint(K8sModel):
    key: str
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class ResourceRequirements(K8sModel):
    requests: dict[str, Quantity] | None = None


class MachineTemplateRef(K8sModel):
    kind: str | None = None
    name: str
    api_version: str | None = None


class NodeRequestSpec(K8sModel):
    """The node asked for, as both API shapes spell it."""

    requirements: list[NodeSelectorRequirement] | None = None
    taints: list[Taint] | None = None
    startup_taints: list[Taint] | None = None
    resources: ResourceRequirements | None = None


class MachineSpec(NodeRequestSpec):
    kubelet: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    )
    machine_template_ref: MachineTemplateRef | None = None


class NodeRequestStatus(K8sModel):
    """The node that came: what both API shapes report."""

    node_name: str | None = None
    provider_id: str | None = Field(default=None, alias="providerID")
    capacity: dict[str, Quantity] | None = None
    allocatable: dict[str, Quantity] | None = None
    conditions: list[Condition] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class MachineStatus(NodeRequestStatus):
    pass


class NodeRequest(K8sObject):
    """A node asked of the cloud, in either API shape (``Machine`` or ``NodeClaim``)."""

    # the launch pipeline's condition types, in this API's words
    CONDITION_LAUNCHED: ClassVar[str]
    CONDITION_REGISTERED: ClassVar[str]
    CONDITION_INITIALIZED: ClassVar[str]
    CONDITION_READY: ClassVar[str] = CONDITION_READY
    # the Node label naming the object a Node was launched for
    LABEL_NODE_OF: ClassVar[str]
    STATUS: ClassVar[type[NodeRequestStatus]] = NodeRequestStatus

    spec: NodeRequestSpec = Field(default_factory=NodeRequestSpec)
    status: NodeRequestStatus | None = None

    @property
    def pipeline(self) -> tuple[str, str, str]:
        """Launched, Registered, Initialized: the conditions Ready rolls up, in order."""
        return (self.CONDITION_LAUNCHED, self.CONDITION_REGISTERED, self.CONDITION_INITIALIZED)

    @property
    def instance_type(self) -> str | None:
        """The single value of the instance-type requirement, if there is one."""
        for req in self.spec.requirements or ():
            if req.key == LABEL_INSTANCE_TYPE and req.operator == "In" and req.values:
                return req.values[0]
        return None

    @property
    def is_ready(self) -> bool:
        return self.is_condition_true(self.CONDITION_READY)


class Machine(NodeRequest):
    GROUP: ClassVar[str] = GROUP
    VERSIONS: ClassVar[tuple[str, ...]] = (VERSION,)
    KIND: ClassVar[str] = "Machine"
    PLURAL: ClassVar[str] = "machines"
    NAMESPACED: ClassVar[bool] = False
    CONDITION_LAUNCHED: ClassVar[str] = CONDITION_LAUNCHED
    CONDITION_REGISTERED: ClassVar[str] = CONDITION_REGISTERED
    CONDITION_INITIALIZED: ClassVar[str] = CONDITION_INITIALIZED
    LABEL_NODE_OF: ClassVar[str] = LABEL_MACHINE_NAME
    STATUS: ClassVar[type[NodeRequestStatus]] = MachineStatus

    api_version: str = f"{GROUP}/{VERSION}"
    kind: Literal["Machine"] = "Machine"
    spec: MachineSpec = Field(default_factory=MachineSpec)
    status: MachineStatus | None = None
