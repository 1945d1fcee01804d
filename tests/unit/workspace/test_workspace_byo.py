"""Bring-your-own nodes: which existing nodes a Workspace uses, how its pods are pinned to them,
and what ResourceReady says while BYO mode waits; a partitioned Workspace (``resource.partition``)
planned from its node's GPUs and asking for ``count`` GPUs or one MIG slice."""

from __future__ import annotations

import copy

import pytest
from test_workspace_inference import PLAN
from ws_unit_helpers import workspace

from controller.api.kinds import WORKSPACES
from controller.api.workspace import LABEL_WORKSPACE, Workspace
from controller.runtime import Request, Store
from controller.runtime.fake import FakeClient
from controller.workspace import byo, names
from controller.workspace.inference import build_rayservice
from controller.workspace.machines import MachineSummary
from controller.workspace.reconciler import Options, Stores, WorkspaceReconciler
from controller.workspace.status import Observation, resource_condition
from presets.registry import default_catalog

LABELS = {"apps": "phi-3"}


def node(name: str, labels: dict | None = None, *, ready: bool = True, gpus: int = 2,
         unschedulable: bool = False) -> dict:
    return {"metadata": {"name": name, "labels": LABELS if labels is None else labels},
            "spec": {"unschedulable": unschedulable},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "allocatable": {"nvidia.com/gpu": str(gpus)}}}


def test_preferred_nodes_first_in_their_order_and_only_usable_ones() -> None:
    ws = workspace(resource={"instanceType": "Standard_NC12s_v3", "labelSelector": {"matchLabels": LABELS},
                             "preferredNodes": ["c", "a", "gone", "notready", "other"]})
    nodes = [node("a"), node("b"), node("c"), node("notready", ready=False), node("other", {"apps": "x"}),
             node("cordoned", unschedulable=True), node("small", gpus=1),
             node("ours", {**LABELS, "kaito.sh/workspace": "phi"})]
    assert byo.usable_nodes(ws, nodes, 2, any_matching=False) == ["c", "a"]
    assert byo.usable_nodes(ws, nodes, 2, any_matching=True) == ["c", "a", "b"]
    assert byo.usable_nodes(ws, nodes, 1, any_matching=True) == ["c", "a", "b", "small"]


def test_match_expressions_count() -> None:
    ws = workspace(resource={"labelSelector": {"matchExpressions": [
        {"key": "pool", "operator": "In", "values": ["gpu"]}, {"key": "spot", "operator": "DoesNotExist"}]}})
    nodes = [node("a", {"pool": "gpu"}), node("b", {"pool": "gpu", "spot": "1"}), node("c", {"pool": "cpu"})]
    assert byo.usable_nodes(ws, nodes, 0, any_matching=True) == ["a"]
    assert byo.selector_text(ws) == "pool In (gpu),spot DoesNotExist ()"


def test_pinning_by_name_keeps_the_one_worker_per_node_rule() -> None:
    ws = workspace()
    rs = byo.pin_to_nodes(build_rayservice(ws, PLAN, "applications: []\n", "img"), ws, ["n2", "n1"])
    cluster = rs["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        spec = group["template"]["spec"]
        assert spec["nodeSelector"] == LABELS  # no owner labels: we never label a node we did not make
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert terms["nodeSelectorTerms"][0]["matchFields"][0]["values"] == ["n1", "n2"]
    assert "podAntiAffinity" in cluster["workerGroupSpecs"][0]["template"]["spec"]["affinity"]


def test_resource_ready_while_byo_waits_and_once_enough_nodes_are_there() -> None:
    hint = "Ready nodes with labels apps=phi-3 and 2 allocatable nvidia.com/gpu"
    waiting = MachineSummary(desired=0).with_existing(["a"], 2, provisions=False, wait_hint=hint)
    cond = resource_condition(Observation(machines=waiting))
    assert (cond.status, cond.reason) == ("False", "WaitingForNodes")
    assert cond.message.startswith(f"1/2 matching nodes ready; waiting for 1 more: {hint}")
    done = MachineSummary(desired=0).with_existing(["a", "b"], 2, provisions=False)
    cond = resource_condition(Observation(machines=done))
    assert (cond.status, cond.reason) == ("True", "NodesReady") and "on nodes a, b" in cond.message


def test_preferred_nodes_count_towards_the_machines() -> None:
    summary = MachineSummary(desired=1, ready=["m0"], worker_nodes=["prov"]).with_existing(["byo"], 2)
    assert summary.all_ready and summary.worker_nodes == ["byo", "prov"]
    assert summary.describe().startswith("existing nodes used: byo; 1/1 machines ready")
    assert not MachineSummary(desired=1, pending=["m0"]).with_existing(["byo"], 2).all_ready


# --- resource.partition: existing nodes only, planned from what the node is -------------------------

GFD = {"nvidia.com/gpu.product": "NVIDIA-H100-NVL", "nvidia.com/gpu.memory": "95830",
       "nvidia.com/cuda.compute.major": "9", "nvidia.com/cuda.compute.minor": "0"}


def gfd_node(name: str, allocatable: dict[str, str], labels: dict | None = None) -> dict:
    """A GPU node as GPU Feature Discovery and the device plugin describe it."""
    return {"metadata": {"name": name, "labels": {**LABELS, **GFD, **(labels or {})}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "capacity": {"cpu": "80", "memory": "659554304Ki", **allocatable},
                       "allocatable": allocatable}}


def partitioned(partition: dict, preset: str = "llama-3.1-8b-instruct") -> dict:
    return {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
            "metadata": {"name": "part", "namespace": "ns", "uid": "u1", "resourceVersion": "1",
                         "generation": 1, "finalizers": [names.FINALIZER]},
            "resource": {"labelSelector": {"matchLabels": LABELS}, "partition": partition},
            "inference": {"preset": {"name": preset, "presetOptions": {"modelAccessSecret": "hf"}}}}


def test_a_partition_sku_is_the_nodes_gpus_scaled_to_count_or_one_mig_slice() -> None:
    catalog = default_catalog()
    accel = Workspace.model_validate(partitioned({"mode": "accelerator", "count": 2}))
    sku = byo.partition_sku(accel, [gfd_node("h", {"nvidia.com/gpu": "4"})], catalog)
    assert (sku.gpu_count, sku.gpu_memory_gib, sku.cuda_compute, sku.gpu_model) == (2, 93.58, "9.0",
                                                                                      "NVIDIA-H100-NVL")
    assert round(sku.memory_gib) == 629  # the node's memory: the host-memory check reads it
    mig = Workspace.model_validate(partitioned({"mode": "mig", "profile": "3g.47gb"}))
    assert byo.partition_resource(mig) == "nvidia.com/mig-3g.47gb" and byo.partition_devices(mig) == 1
    sku = byo.partition_sku(mig, [gfd_node("m", {"nvidia.com/mig-3g.47gb": "2"})], catalog)
    assert (sku.gpu_count, sku.gpu_memory_gib, sku.cuda_compute) == (1, 47.0, "9.0")
    with pytest.raises(byo.NoPartitionNode, match=r"2 allocatable nvidia\.com/gpu yet"):
        byo.partition_sku(accel, [gfd_node("small", {"nvidia.com/gpu": "1"})], catalog)
    bare = gfd_node("bare", {"nvidia.com/gpu": "2"})
    bare["metadata"]["labels"] = LABELS
    with pytest.raises(byo.NoPartitionNode, match=r"lacks nvidia\.com/gpu\.product"):
        byo.partition_sku(accel, [bare], catalog)


def _partition_reconciler(obj: dict) -> tuple[WorkspaceReconciler, Stores, FakeClient]:
    client = FakeClient()
    client.add(WORKSPACES, copy.deepcopy(obj))
    stores = Stores(Store(), Store(), Store(), Store(), Store())
    stores.machines.add_label_index(LABEL_WORKSPACE)
    stores.workspaces.add(copy.deepcopy(obj))
    return WorkspaceReconciler(client, stores, options=Options()), stores, client


def _resource_ready(client: FakeClient) -> dict:
    status = client.objects[("workspaces", "ns", "part")]["status"]
    return next(c for c in status["conditions"] if c["type"] == "ResourceReady")


def test_an_accelerator_partition_waits_for_a_node_then_asks_for_count_gpus_on_it() -> None:
    rec, stores, client = _partition_reconciler(partitioned({"mode": "accelerator", "count": 2}))
    rec.reconcile(Request("ns", "part"))
    rr = _resource_ready(client)
    assert (rr["status"], rr["reason"]) == ("False", "WaitingForNodes")
    assert "no Ready node with labels apps=phi-3 and 2 allocatable nvidia.com/gpu yet" in rr["message"]
    stores.workspaces.add(client.objects[("workspaces", "ns", "part")])
    stores.nodes.add(gfd_node("h100-a", {"nvidia.com/gpu": "4"}))
    rec.reconcile(Request("ns", "part"))
    assert not [k for k in client.objects if k[0] == "machines"]  # nothing is provisioned
    rr = _resource_ready(client)
    assert rr["status"] == "True" and "on nodes h100-a" in rr["message"]
    assert "2 of node h100-a's GPUs" in rr["message"]
    rs = client.objects[("rayservices", "ns", "part")]
    [worker] = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert worker["rayStartParams"]["num-gpus"] == "2"
    assert worker["template"]["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    affinity = worker["template"]["spec"]["affinity"]["nodeAffinity"]
    terms = affinity["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchFields"][0]["values"] == ["h100-a"]


def test_a_mig_partition_asks_for_one_slice_of_its_profile() -> None:
    rec, stores, client = _partition_reconciler(partitioned({"mode": "mig", "profile": "3g.47gb"}))
    stores.nodes.add(gfd_node("h100-mig", {"nvidia.com/mig-3g.47gb": "2"}))
    rec.reconcile(Request("ns", "part"))
    rs = client.objects[("rayservices", "ns", "part")]
    [worker] = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    spec = worker["template"]["spec"]
    assert worker["rayStartParams"]["num-gpus"] == "1"  # KubeRay counts nvidia.com/gpu only: said here
    assert spec["containers"][0]["resources"]["limits"] == {"nvidia.com/mig-3g.47gb": "1"}
    toleration = {"key": "nvidia.com/mig-3g.47gb", "operator": "Exists", "effect": "NoSchedule"}
    assert toleration in spec["tolerations"]


def test_a_model_that_outgrows_the_nodes_mig_slice_is_refused_at_plan_time() -> None:
    rec, stores, client = _partition_reconciler(partitioned({"mode": "mig", "profile": "1g.12gb"}))
    stores.nodes.add(gfd_node("h100-mig", {"nvidia.com/mig-1g.12gb": "7"}))
    rec.reconcile(Request("ns", "part"))
    rr = _resource_ready(client)
    assert rr["reason"] == "InvalidWorkspace" and "exactly one slice" in rr["message"]
    assert not [k for k in client.objects if k[0] == "rayservices"]
