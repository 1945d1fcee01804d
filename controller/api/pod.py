"""The part of a core/v1 Pod the Workspace controller reads: why a Ray pod is not running.

Why a model of our own and not the whole Pod: the controller only reads a Ray pod's status to
quote the kubelet's and the scheduler's words (ImagePullBackOff, OOMKilled, Unschedulable, ...) in
the Workspace; parsing those few fields at the boundary keeps dicts out of the logic, and every
field it does not read is ignored.
"""

from __future__ import annotations

from controller.api.meta import K8sModel, ObjectMeta

# Labels KubeRay puts on every pod of a RayCluster (ray-operator/controllers/ray/utils/constant.go).
LABEL_RAY_CLUSTER = "ray.io/cluster"
LABEL_RAY_NODE_TYPE = "ray.io/node-type"


class ContainerStateWaiting(K8sModel):
    reason: str | None = None
    message: str | None = None


class ContainerStateTerminated(K8sModel):
    reason: str | None = None
    message: str | None = None
    exit_code: int | None = None


class ContainerState(K8sModel):
    waiting: ContainerStateWaiting | None = None
    terminated: ContainerStateTerminated | None = None


class ContainerStatus(K8sModel):
    name: str
    ready: bool | None = None
    restart_count: int | None = None
    state: ContainerState | None = None
    last_state: ContainerState | None = None


class PodCondition(K8sModel):
    type: str
    status: str
    reason: str | None = None
    message: str | None = None


class PodStatus(K8sModel):
    phase: str | None = None
    reason: str | None = None  # e.g. Evicted, for a Failed pod
    message: str | None = None
    conditions: list[PodCondition] | None = None
    init_container_statuses: list[ContainerStatus] | None = None
    container_statuses: list[ContainerStatus] | None = None


class Pod(K8sModel):
    metadata: ObjectMeta
    status: PodStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    def label(self, key: str) -> str | None:
        return (self.metadata.labels or {}).get(key)
