"""Where each of our kinds lives in the REST API, for ``controller.runtime.Client`` and informers."""

from __future__ import annotations

from controller.api.machine import Machine
from controller.api.meta import K8sObject
from controller.api.nodeclaim import NodeClaim
from controller.api.rayservice import RayService
from controller.api.workspace import Workspace
from controller.runtime.client import ResourceKind


def kind_of(model: type[K8sObject]) -> ResourceKind:
    """The ResourceKind of a model class, at its storage version."""
    return ResourceKind(
        group=model.GROUP,
        version=model.VERSIONS[-1],
        plural=model.PLURAL,
        kind=model.KIND,
        namespaced=model.NAMESPACED,
    )


WORKSPACES = kind_of(Workspace)
MACHINES = kind_of(Machine)
NODECLAIMS = kind_of(NodeClaim)
RAYSERVICES = kind_of(RayService)
# KubeRay makes these from our RayServices; the controller reads and deletes them only to replace a
# cluster whose spec changed (controller/workspace/cluster_rollout.py), so no model of ours
RAYCLUSTERS = ResourceKind(group="ray.io", version="v1", plural="rayclusters", kind="RayCluster",
                           namespaced=True)
