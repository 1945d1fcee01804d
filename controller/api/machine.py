"""Karpenter-core ``Machine`` (karpenter.sh/v1alpha5, cluster-scoped): one GPU node asked of the cloud.

Shape from karpenter@6a5c00a35:pkg/apis/v1alpha5/machine*.go (see shared/research/karpenter.md §1.1).
Conditions follow the Kaito/gpu-provisioner era: MachineLaunched -> MachineRegistered ->
MachineInitialized, summarised by Ready.
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


class MachineSpec(K8sModel):
    requirements: list[NodeSelectorRequirement] | None = None
    taints: list[Taint] | None = None
    startup_taints: list[Taint] | None = None
    resources: ResourceRequirements | None = None
    kubelet: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    )
    machine_template_ref: MachineTemplateRef | None = None


class MachineStatus(K8sModel):
    node_name: str | None = None
    provider_id: str | None = Field(default=None, alias="providerID")
    capacity: dict[str, Quantity] | None = None
    allocatable: dict[str, Quantity] | None = None
    conditions: list[Condition] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class Machine(K8sObject):
    GROUP: ClassVar[str] = GROUP
    VERSIONS: ClassVar[tuple[str, ...]] = (VERSION,)
    KIND: ClassVar[str] = "Machine"
    PLURAL: ClassVar[str] = "machines"
    NAMESPACED: ClassVar[bool] = False

    api_version: str = f"{GROUP}/{VERSION}"
    kind: Literal["Machine"] = "Machine"
    spec: MachineSpec = Field(default_factory=MachineSpec)
    status: MachineStatus | None = None

    @property
    def instance_type(self) -> str | None:
        """The single value of the instance-type requirement, if there is one."""
        for req in self.spec.requirements or ():
            if req.key == LABEL_INSTANCE_TYPE and req.operator == "In" and req.values:
                return req.values[0]
        return None

    @property
    def is_ready(self) -> bool:
        return self.is_condition_true(CONDITION_READY)
