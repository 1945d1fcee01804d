"""The Kubernetes kinds the provisioner reads and writes, and the well-known keys it uses.

Why one place: the Machine controller, the fake cloud and the tests must agree on these strings
(Karpenter v1alpha5 names, so that kubectl users and Kaito see what they expect).
"""

from __future__ import annotations

from controller.api.kinds import MACHINES
from controller.runtime.client import ResourceKind

__all__ = ["CONFIGMAPS", "MACHINES", "NODES"]

NODES = ResourceKind(group="", version="v1", plural="nodes", kind="Node", namespaced=False)
CONFIGMAPS = ResourceKind(group="", version="v1", plural="configmaps", kind="ConfigMap", namespaced=True)

TERMINATION_FINALIZER = "karpenter.sh/termination"

LABEL_MACHINE_NAME = "karpenter.sh/machine-name"
LABEL_REGISTERED = "karpenter.sh/registered"
LABEL_INITIALIZED = "karpenter.sh/initialized"
LABEL_INSTANCE_TYPE = "node.kubernetes.io/instance-type"
LABEL_ZONE = "topology.kubernetes.io/zone"
LABEL_ARCH = "kubernetes.io/arch"
LABEL_OS = "kubernetes.io/os"
LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_CAPACITY_TYPE = "karpenter.sh/capacity-type"

# Condition types on a v1alpha5 Machine (Karpenter's knative "living" set rolls up into Ready).
COND_LAUNCHED = "MachineLaunched"
COND_REGISTERED = "MachineRegistered"
COND_INITIALIZED = "MachineInitialized"
COND_READY = "Ready"

# Taints a node carries while it boots; initialization waits for them to go (Karpenter's list).
TAINT_NOT_READY = "node.kubernetes.io/not-ready"
EPHEMERAL_TAINT_KEYS = (
    TAINT_NOT_READY,
    "node.kubernetes.io/unreachable",
    "node.cloudprovider.kubernetes.io/uninitialized",
)
