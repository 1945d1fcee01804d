"""The part of a core/v1 Node the Workspace controller reads to use a node it did not provision.

Why: bring-your-own nodes (``resource.preferredNodes``, ``--node-provisioner=byo``) are used only
when they are Ready, schedulable and have the GPUs a worker asks for; those few fields, parsed at
the boundary, are all the controller needs of a Node. A partitioned Workspace (``resource.partition``)
is planned from what its node is: the labels NVIDIA's GPU Feature Discovery puts on a GPU node
(product, memory per GPU, compute capability) and the node's memory, read here as ``GpuFacts``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from controller.api.meta import K8sModel, LabelSelector, ObjectMeta

GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"  # the device plugin's "mixed" strategy: one resource per profile
# GPU Feature Discovery's labels (what Kaito's sku.GetGPUConfigFromNodeLabels reads)
LABEL_GPU_PRODUCT = "nvidia.com/gpu.product"
LABEL_GPU_MEMORY = "nvidia.com/gpu.memory"  # MiB per GPU
LABEL_CUDA_MAJOR = "nvidia.com/cuda.compute.major"
LABEL_CUDA_MINOR = "nvidia.com/cuda.compute.minor"
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
           "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_QUANTITY = re.compile(r"^([0-9.]+)([KMGT]i?)?$")


def quantity_gib(raw: str | None) -> float | None:
    """A memory quantity (``"64Gi"``, ``"263958528Ki"``, plain bytes) in GiB; None if unreadable.

    >>> quantity_gib("64Gi"), quantity_gib("1048576Ki"), quantity_gib("lots")
    (64.0, 1.0, None)
    """
    match = _QUANTITY.match((raw or "").strip())
    if not match:
        return None
    return float(match.group(1)) * _BINARY.get(match.group(2) or "", 1) / 2**30


def mig_resource(profile: str) -> str:
    """The extended resource of a MIG profile: ``nvidia.com/mig-1g.10gb``."""
    return MIG_RESOURCE_PREFIX + profile


@dataclass(frozen=True)
class GpuFacts:
    """What a node's labels and status say about its GPUs and memory (for the estimator)."""

    gpu_model: str
    gpu_memory_gib: float  # per GPU
    cuda_compute: str  # e.g. "9.0"
    memory_gib: float  # the node's memory (host RAM)
    vcpus: int


class NodeCondition(K8sModel):
    type: str
    status: str


class NodeSpec(K8sModel):
    unschedulable: bool | None = None


class NodeStatus(K8sModel):
    conditions: list[NodeCondition] | None = None
    allocatable: dict[str, str] | None = None
    capacity: dict[str, str] | None = None


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
        return self.allocatable_count(GPU_RESOURCE)

    def allocatable_count(self, resource: str) -> int:
        """Allocatable devices of ``resource`` (``nvidia.com/gpu``, ``nvidia.com/mig-1g.10gb``)."""
        raw = ((self.status.allocatable if self.status else None) or {}).get(resource, "0")
        try:
            return int(raw)
        except ValueError:
            return 0

    def gpu_facts(self) -> GpuFacts | str:
        """The node's GPU model, memory per GPU and compute capability from GPU Feature
        Discovery's labels, and its memory; or what is missing (a message)."""
        labels = self.metadata.labels or {}
        missing = [k for k in (LABEL_GPU_PRODUCT, LABEL_GPU_MEMORY, LABEL_CUDA_MAJOR) if not labels.get(k)]
        status = self.status or NodeStatus()
        memory = quantity_gib((status.capacity or status.allocatable or {}).get("memory"))
        if memory is None:
            missing.append("status.capacity.memory")
        if missing:
            return (f"node {self.name} lacks {', '.join(missing)} (NVIDIA GPU Feature Discovery labels the "
                    "GPU nodes it finds; the estimator needs them to plan a partition)")
        try:
            gpu_mib = float(labels[LABEL_GPU_MEMORY])
            compute = f"{int(labels[LABEL_CUDA_MAJOR])}.{int(labels.get(LABEL_CUDA_MINOR) or 0)}"
        except ValueError:
            return f"node {self.name}: {LABEL_GPU_MEMORY} or {LABEL_CUDA_MAJOR} is not a number"
        cpus = (status.capacity or status.allocatable or {}).get("cpu", "1")
        return GpuFacts(gpu_model=labels[LABEL_GPU_PRODUCT], gpu_memory_gib=round(gpu_mib / 1024, 2),
                        cuda_compute=compute, memory_gib=round(memory or 0.0, 2),
                        vcpus=max(1, int(cpus)) if cpus.isdigit() else 1)

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
