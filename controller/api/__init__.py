"""Pydantic models of the resources the operator reads and writes: Workspace (kaito.sh), Machine
and NodeClaim (karpenter.sh; both ``NodeRequest``s) and RayService (ray.io).
``Model.from_k8s(dict)`` parses what the API server returns, ``obj.to_k8s()`` gives back the dict
to send. ResourceKinds live in ``controller.api.kinds`` (kept out of this package's import so that
pure code does not load the kubernetes client)."""

from controller.api.machine import (
    Machine,
    MachineSpec,
    MachineStatus,
    NodeRequest,
    NodeSelectorRequirement,
    Taint,
)
from controller.api.meta import (
    Condition,
    K8sModel,
    K8sObject,
    LabelSelector,
    ObjectMeta,
    OwnerReference,
    find_condition,
    is_condition_true,
    remove_condition,
    set_condition,
)
from controller.api.nodeclaim import NodeClaim
from controller.api.rayservice import RayClusterSpec, RayService, RayServiceSpec, WorkerGroupSpec
from controller.api.workspace import (
    AdapterSpec,
    DataDestination,
    DataSource,
    InferenceSpec,
    PresetSpec,
    ResourceSpec,
    TuningSpec,
    Workspace,
    WorkspaceStatus,
)

__all__ = [
    "AdapterSpec",
    "Condition",
    "DataDestination",
    "DataSource",
    "InferenceSpec",
    "K8sModel",
    "K8sObject",
    "LabelSelector",
    "Machine",
    "MachineSpec",
    "MachineStatus",
    "NodeClaim",
    "NodeRequest",
    "NodeSelectorRequirement",
    "ObjectMeta",
    "OwnerReference",
    "PresetSpec",
    "RayClusterSpec",
    "RayService",
    "RayServiceSpec",
    "ResourceSpec",
    "Taint",
    "TuningSpec",
    "WorkerGroupSpec",
    "Workspace",
    "WorkspaceStatus",
    "find_condition",
    "is_condition_true",
    "remove_condition",
    "set_condition",
]
