"""The part of a core/v1 Node the Workspace controller reads to use a node it did not provision.

Why: bring-your-own nodes (``resource.preferredNodes``, ``--node-provisioner=byo``) are used only
when they are Ready, schedulable and have the GPUs a worker asks for; those few fields, parsed at
the boundary, are all the controller needs of a Node.
"""

from __future__ import annotations

from controller.api.meta import K8sModel, LabelSelector, ObjectMeta

GPU_RESOURCE = "nvidia.com/gpu"


class NodeCondition(K8sModel):
    type: str
    status: str


class NodeSpec(K8sModel):
    unschedulable: bool | None = None


class NodeStatus(K8sModel):
    conditions: list[NodeCondition] | None = None
    allocatable: dict[str, str] | None = None


class Node(K8sModel):
    metadata: ObjectMeta
    spec: NodeSpec | None = None
    status: NodeStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def is_ready(self) -> bool:
        conds = self.status.conditions if self.status else None
        return any(c.type == "Ready" and c.status == "True" for c in conds or [])

    @property
    def gpus(self) -> int:
        """Allocatable ``nvidia.com/gpu`` (a whole count, as the device plugin reports it)."""
        raw = ((self.status.allocatable if self.status else None) or {}).get(GPU_RESOURCE, "0")
        try:
            return int(raw)
        except ValueError:
            return 0

    def usable(self) -> bool:
        """Ready, schedulable and not being deleted."""
        spec = self.spec or NodeSpec()
        return self.is_ready and not spec.unschedulable and not self.metadata.deletion_timestamp

    def matches(self, selector: LabelSelector) -> bool:
        """Whether the node's labels satisfy ``selector`` (matchLabels and matchExpressions)."""
        labels = self.metadata.labels or {}
        if any(labels.get(k) != v for k, v in (selector.match_labels or {}).items()):
            return False
        for req in selector.match_expressions or []:
            value, values = labels.get(req.key), req.values or []
            ok = {"In": value in values, "NotIn": value not in values,
                  "Exists": req.key in labels, "DoesNotExist": req.key not in labels}[req.operator]
            if not ok:
                return False
        return True
