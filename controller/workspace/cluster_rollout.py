"""How a running workspace's Ray cluster takes a new pod template on nodes that cannot hold two.

Why: KubeRay's default RayService upgrade (``NewCluster``) starts a second RayCluster beside the
serving one and switches over once it is ready. A workspace's GPU nodes are exactly as many as one
cluster needs, so the second cluster's workers never schedule and the upgrade never finishes: an
adapter edit (its puller and volume live in the worker pod template) left the workspace stuck.

So the RayService asks for ``upgradeStrategy.type: None`` (KubeRay v1.5+): a change of the serve
config alone is applied in place, to the running cluster, with no restart; a change of the cluster
spec is left to us. We then replace the cluster rather than double it: the RayService carries
the hash of its ``rayClusterConfig`` in the annotation ``kaito.sh/cluster-hash``, which KubeRay
copies onto the RayCluster it makes from it; a RayCluster of the workspace whose hash differs
(or that has none: one made before this rule) is deleted, and KubeRay, finding no cluster, makes
one from the current spec on the same nodes. The cost is the serving gap of a restart, once per
cluster-spec change; serve-config changes have none.

Pure: the reconciler reads the RayClusters the status names and deletes the ones this says are stale.
"""

from __future__ import annotations

import hashlib
import json

ANNOTATION_CLUSTER_HASH = "kaito.sh/cluster-hash"
UPGRADE_STRATEGY = {"type": "None"}


def cluster_hash(ray_cluster_config: dict) -> str:
    return hashlib.sha256(json.dumps(ray_cluster_config, sort_keys=True).encode()).hexdigest()[:16]


def cluster_names(rayservice: dict | None) -> list[str]:
    """The RayClusters KubeRay's status names for this RayService (serving and pending)."""
    status = (rayservice or {}).get("status") or {}
    found = []
    for part in ("activeServiceStatus", "pendingServiceStatus"):
        name = (status.get(part) or {}).get("rayClusterName")
        if name and name not in found:
            found.append(name)
    return found


def is_stale(cluster: dict, rayservice: dict) -> bool:
    """A RayCluster, not already going, made from another cluster spec than the RayService's now."""
    meta = cluster.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return False
    want = ((rayservice.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_CLUSTER_HASH)
    return bool(want) and (meta.get("annotations") or {}).get(ANNOTATION_CLUSTER_HASH) != want
