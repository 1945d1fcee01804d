"""Karpenter v1 ``NodeClaim`` (karpenter.sh/v1, cluster-scoped): the node API clusters run today.

Why beside Machine: Karpenter removed ``Machine`` in v0.32 and Kaito moved to NodeClaims (v0.12,
``pkg/utils/nodeclaim/nodeclaim.go``), so Azure's gpu-provisioner and Karpenter's Azure provider
serve NodeClaims, not Machines. The shape is sigs.k8s.io/karpenter v1.10.0's (Kaito v0.12's), whose
CRD the tests install from the Go module (hack/upstream_crds.py); the vocabulary (the fake
``kaito`` NodePool label, the ``default`` KaitoNodeClass) is Kaito's, so those provisioners take
our NodeClaims for Kaito's. Lifecycle and fields shared with Machine are ``NodeRequest``'s.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from controller.api.machine import (
    GROUP,
    NodeRequest,
    NodeRequestSpec,
    NodeRequestStatus,
    NodeSelectorRequirement,
)
from controller.api.meta import K8sModel

VERSION = "v1"

# Karpenter v1's condition types (pkg/apis/v1/nodeclaim_status.go).
CONDITION_LAUNCHED = "Launched"
CONDITION_REGISTERED = "Registered"
CONDITION_INITIALIZED = "Initialized"

# Kaito v0.12 (pkg/utils/consts): a NodePool label no real NodePool carries, so Karpenter itself
# neither scales it up nor consolidates it; and the node class its Azure provider reads.
LABEL_NODEPOOL = "karpenter.sh/nodepool"
KAITO_NODEPOOL = "kaito"
NODE_CLASS_GROUP = "kaito.sh"
NODE_CLASS_KIND = "KaitoNodeClass"
NODE_CLASS_NAME = "default"
LABEL_AZURE_SKU = "karpenter.azure.com/sku-name"
ANNOTATION_NODE_IMAGE_FAMILY = "kaito.sh/node-image-family"
NODE_IMAGE_FAMILY = "ubuntu"
# Karpenter v1 links a Node to its NodeClaim by providerID only; our provisioner also labels the
# Node with the NodeClaim's name so a Node event finds it without a scan (as Machines have
# karpenter.sh/machine-name). Not in karpenter.sh: that domain is Karpenter's own.
LABEL_NODECLAIM_NAME = "kaito.sh/nodeclaim-name"


class NodeSelectorRequirementWithMinValues(NodeSelectorRequirement):
    min_values: int | None = None


class NodeClassReference(K8sModel):
    group: str
    kind: str
    name: str


class NodeClaimSpec(NodeRequestSpec):
    requirements: list[NodeSelectorRequirementWithMinValues] | None = None  # type: ignore[assignment]
    node_class_ref: NodeClassReference | None = None
    expire_after: str | None = None
    termination_grace_period: str | None = None


class NodeClaimStatus(NodeRequestStatus):
    image_id: str | None = Field(default=None, alias="imageID")
    last_pod_event_time: str | None = None


class NodeClaim(NodeRequest):
    GROUP: ClassVar[str] = GROUP
    VERSIONS: ClassVar[tuple[str, ...]] = (VERSION,)
    KIND: ClassVar[str] = "NodeClaim"
    PLURAL: ClassVar[str] = "nodeclaims"
    NAMESPACED: ClassVar[bool] = False
    CONDITION_LAUNCHED: ClassVar[str] = CONDITION_LAUNCHED
    CONDITION_REGISTERED: ClassVar[str] = CONDITION_REGISTERED
    CONDITION_INITIALIZED: ClassVar[str] = CONDITION_INITIALIZED
    LABEL_NODE_OF: ClassVar[str] = LABEL_NODECLAIM_NAME
    STATUS: ClassVar[type[NodeRequestStatus]] = NodeClaimStatus

    api_version: str = f"{GROUP}/{VERSION}"
    kind: Literal["NodeClaim"] = "NodeClaim"
    spec: NodeClaimSpec = Field(default_factory=NodeClaimSpec)
    status: NodeClaimStatus | None = None
