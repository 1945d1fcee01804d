"""Bring-your-own nodes: which existing nodes a Workspace uses, how its pods are pinned to them,
and what ResourceReady says while BYO mode waits."""

from __future__ import annotations

from test_workspace_inference import PLAN
from ws_unit_helpers import workspace

from controller.workspace import byo
from controller.workspace.inference import build_rayservice
from controller.workspace.machines import MachineSummary
from controller.workspace.status import Observation, resource_condition

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
