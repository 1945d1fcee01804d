"""An edit of a running workspace on fixed nodes: serve config in place, cluster replaced, never doubled
(issue 11 item 13)."""

from __future__ import annotations

import copy

from test_workspace_inference import PLAN
from ws_unit_helpers import workspace

from controller.api.kinds import RAYCLUSTERS, WORKSPACES
from controller.runtime import Store
from controller.runtime.fake import FakeClient
from controller.workspace import cluster_rollout
from controller.workspace.inference import build_rayservice
from controller.workspace.reconciler import Options, Stores, WorkspaceReconciler

ADAPTER = {"source": {"name": "fr", "image": "reg/fr:1"}, "strength": "0.5"}


def _hash(rs: dict) -> str:
    return rs["metadata"]["annotations"][cluster_rollout.ANNOTATION_CLUSTER_HASH]


def test_the_rayservice_never_asks_for_a_second_cluster() -> None:
    rs = build_rayservice(workspace(), PLAN, "applications: []\n", "img:1")
    assert rs["spec"]["upgradeStrategy"] == {"type": "None"}


def test_ray_pods_get_no_service_account_token() -> None:
    rs = build_rayservice(workspace(), PLAN, "applications: []\n", "img:1")
    cluster = rs["spec"]["rayClusterConfig"]
    for group in (cluster["headGroupSpec"], *cluster["workerGroupSpecs"]):
        assert group["template"]["spec"]["automountServiceAccountToken"] is False


def test_the_cluster_hash_follows_the_cluster_spec_only() -> None:
    before = build_rayservice(workspace(), PLAN, "applications: []\n", "img:1")
    serve_only = build_rayservice(workspace(), PLAN, "applications: [{name: x}]\n", "img:1")
    assert serve_only["spec"]["rayClusterConfig"] == before["spec"]["rayClusterConfig"]
    assert _hash(serve_only) == _hash(before)  # applied in place: no restart
    edited = build_rayservice(workspace(adapters=[ADAPTER]), PLAN, "applications: []\n", "img:1")
    assert edited["spec"]["rayClusterConfig"] != before["spec"]["rayClusterConfig"]  # the puller
    assert _hash(edited) != _hash(before)  # so the cluster is replaced


def _cluster(name: str, hash_: str | None, deleting: bool = False) -> dict:
    meta: dict = {"name": name, "namespace": "ns", "annotations": {}}
    if hash_:
        meta["annotations"][cluster_rollout.ANNOTATION_CLUSTER_HASH] = hash_
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": meta, "spec": {}}


def test_stale_clusters_are_the_ones_of_another_spec() -> None:
    rs = {"metadata": {"annotations": {cluster_rollout.ANNOTATION_CLUSTER_HASH: "new"}},
          "status": {"activeServiceStatus": {"rayClusterName": "a"},
                     "pendingServiceStatus": {"rayClusterName": "b"}}}
    assert cluster_rollout.cluster_names(rs) == ["a", "b"]
    assert cluster_rollout.is_stale(_cluster("a", "old"), rs)
    assert cluster_rollout.is_stale(_cluster("a", None), rs)  # made before the rule
    assert not cluster_rollout.is_stale(_cluster("a", "new"), rs)
    assert not cluster_rollout.is_stale(_cluster("a", "old", deleting=True), rs)
    assert cluster_rollout.cluster_names(None) == []


def test_the_reconciler_deletes_the_cluster_of_an_earlier_spec() -> None:
    client = FakeClient()
    client.add(WORKSPACES, copy.deepcopy(workspace(namespace="ns").to_k8s()))
    stores = Stores(Store(), Store(), Store(), Store(), Store())
    rec = WorkspaceReconciler(client, stores, options=Options(), planner=lambda w: PLAN)

    rs = build_rayservice(workspace(namespace="ns"), PLAN, "applications: []\n", "img:1")
    rs["status"] = {"pendingServiceStatus": {"rayClusterName": "phi-old"}}
    client.add(RAYCLUSTERS, _cluster("phi-old", "old"))
    rec._replace_stale_clusters(workspace(namespace="ns"), rs)
    assert ("rayclusters", "ns", "phi-old") not in client.objects
    client.add(RAYCLUSTERS, _cluster("phi-new", _hash(rs)))
    rs["status"] = {"pendingServiceStatus": {"rayClusterName": "phi-new"}}
    rec._replace_stale_clusters(workspace(namespace="ns"), rs)
    assert ("rayclusters", "ns", "phi-new") in client.objects
    rs["status"] = {"pendingServiceStatus": {"rayClusterName": "never-made"}}
    rec._replace_stale_clusters(workspace(namespace="ns"), rs)  # a name with no cluster: nothing to do
