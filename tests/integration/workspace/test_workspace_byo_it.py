"""Bring-your-own nodes on a real kube-apiserver: Node objects created directly (no kubelet), a
Workspace's preferredNodes used before any Machine is created, and ``--node-provisioner=byo``
waiting, with a clear ResourceReady, for enough matching GPU nodes."""

from __future__ import annotations

import contextlib
import uuid

import pytest
from ws_it_helpers import (
    conditions,
    gone,
    machines_of,
    running_controller,
    set_machine_status,
    wait_for,
    workspace_manifest,
)

from controller.api.kinds import RAYSERVICES, WORKSPACES
from controller.runtime import Client, NotFound
from controller.runtime.kinds import NODES
from controller.workspace import names

pytestmark = pytest.mark.integration


def _node(client: Client, name: str, labels: dict[str, str], gpus: int = 2,
          devices: dict[str, str] | None = None) -> None:
    """A Ready GPU node, as a kubelet with the NVIDIA device plugin would report it."""
    client.create(NODES, {"metadata": {"name": name, "labels": {**labels, "kubernetes.io/hostname": name}}})
    devices = devices or {"nvidia.com/gpu": str(gpus)}
    client.patch(NODES, name, {"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ready"}],
        "allocatable": {"cpu": "8", "memory": "64Gi", **devices},
        "capacity": {"cpu": "8", "memory": "64Gi", **devices}}}, subresource="status")


@contextlib.contextmanager
def _nodes(client: Client):
    made: list[str] = []
    try:
        yield made
    finally:
        for n in made:
            with contextlib.suppress(NotFound):
                client.delete(NODES, n)


def _pinning(rs: dict) -> list[tuple[dict, list[str]]]:
    cluster = rs["spec"]["rayClusterConfig"]
    out = []
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        spec = group["template"]["spec"]
        [term] = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"]
        out.append((spec.get("nodeSelector") or {}, term["matchFields"][0]["values"]))
    return out


def test_preferred_nodes_are_used_before_machines_are_created(
    ws_client: Client, ws_ns: str, kubeconfig: str
) -> None:
    client, ns, name = ws_client, ws_ns, "prefer"
    mine = f"byo-{uuid.uuid4().hex[:6]}"
    with _nodes(client) as made:
        _node(client, mine, {"apps": name})
        made.append(mine)
        with running_controller(kubeconfig):
            manifest = workspace_manifest(name, count=2)
            manifest["resource"]["preferredNodes"] = [mine]
            client.create(WORKSPACES, manifest, ns)
            [m] = wait_for(lambda: machines_of(client, ns, name), what="one machine")
            assert m["metadata"]["name"] == names.machine_name(ns, name, 0)
            rr = conditions(client, ns, name)["ResourceReady"]
            assert rr["status"] == "False" and f"existing nodes used: {mine}" in rr["message"]
            set_machine_status(client, m["metadata"]["name"], True, node="prov-a")
            wait_for(lambda: conditions(client, ns, name)["ResourceReady"]["status"] == "True",
                     what="ResourceReady")
            assert len(machines_of(client, ns, name)) == 1  # the preferred node stood in for the second
            ws = client.get(WORKSPACES, name, ns)
            assert ws["status"]["workerNodes"] == sorted([mine, "prov-a"])
            rs = wait_for(lambda: client.get(RAYSERVICES, names.rayservice_name(name), ns), what="RayService")
            for selector, pinned in _pinning(rs):  # a node we never labelled: pinned by name
                assert selector == {"apps": name} and pinned == sorted([mine, "prov-a"])
            client.delete(WORKSPACES, name, ns)
            wait_for(lambda: gone(client, WORKSPACES, name, ns), what="workspace gone")
            client.get(NODES, mine)  # a node we did not provision is left alone


def test_byo_mode_waits_for_enough_matching_gpu_nodes(ws_client: Client, ws_ns: str, kubeconfig: str) -> None:
    client, ns, name = ws_client, ws_ns, "byo"
    tag = uuid.uuid4().hex[:6]
    labels = {"apps": f"{name}-{tag}"}
    first, second, small = f"byo-{tag}-a", f"byo-{tag}-b", f"byo-{tag}-small"
    with _nodes(client) as made, running_controller(kubeconfig, node_provisioner="byo"):
        _node(client, first, labels)
        _node(client, small, labels, gpus=1)  # too few GPUs for a 2-GPU worker
        made += [first, small]
        manifest = workspace_manifest(name, count=2)
        manifest["resource"]["labelSelector"] = {"matchLabels": labels}
        client.create(WORKSPACES, manifest, ns)
        rr = wait_for(lambda: (c := conditions(client, ns, name).get("ResourceReady", {})).get("message", "")
                      .startswith("1/2") and c, what="waiting for nodes")
        assert rr["status"] == "False" and rr["reason"] == "WaitingForNodes"
        assert f"apps={labels['apps']}" in rr["message"] and "2 allocatable nvidia.com/gpu" in rr["message"]
        assert "--node-provisioner=byo provisions nothing" in rr["message"]
        assert not machines_of(client, ns, name)

        _node(client, second, labels)
        made.append(second)
        rr = wait_for(lambda: (c := conditions(client, ns, name)["ResourceReady"])["status"] == "True" and c,
                      what="NodesReady")
        assert rr["reason"] == "NodesReady" and rr["message"].startswith("2/2 matching nodes ready")
        rs = wait_for(lambda: client.get(RAYSERVICES, names.rayservice_name(name), ns), what="RayService")
        for selector, pinned in _pinning(rs):
            assert selector == labels and pinned == [first, second]
        assert not machines_of(client, ns, name)
        client.delete(WORKSPACES, name, ns)
        wait_for(lambda: gone(client, WORKSPACES, name, ns), what="workspace gone")


# GPU Feature Discovery's labels on an A100 80GB node (what a partition is planned from)
A100_LABELS = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.memory": "81920",
               "nvidia.com/cuda.compute.major": "8", "nvidia.com/cuda.compute.minor": "0"}


def test_kaitos_accelerator_partition_runs_on_an_existing_node_with_count_gpus(
    ws_client: Client, ws_ns: str, kubeconfig: str
) -> None:
    """Kaito v0.12's accelerator example's shape (no instanceType, partition count 2): no Machine,
    the RayService's workers ask for 2 GPUs of the matching node, which has 4."""
    client, ns, name = ws_client, ws_ns, "accel"
    tag = uuid.uuid4().hex[:6]
    labels = {"apps": f"{name}-{tag}"}
    node = f"a100-{tag}"
    with _nodes(client) as made, running_controller(kubeconfig):
        manifest = workspace_manifest(name)
        manifest["resource"] = {"labelSelector": {"matchLabels": labels},
                                "partition": {"mode": "accelerator", "count": 2}}
        client.create(WORKSPACES, manifest, ns)
        rr = wait_for(lambda: (c := conditions(client, ns, name).get("ResourceReady", {}))
                      .get("reason") == "WaitingForNodes" and c, what="waiting for a node")
        assert "2 allocatable nvidia.com/gpu yet" in rr["message"]
        _node(client, node, {**labels, **A100_LABELS}, gpus=4)
        made.append(node)
        rr = wait_for(lambda: (c := conditions(client, ns, name)["ResourceReady"])["status"] == "True" and c,
                      what="NodesReady")
        assert f"on nodes {node}" in rr["message"] and "NVIDIA-A100-SXM4-80GB" in rr["message"]
        rs = wait_for(lambda: client.get(RAYSERVICES, names.rayservice_name(name), ns), what="RayService")
        [worker] = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        assert worker["template"]["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "2"}
        for selector, pinned in _pinning(rs):
            assert selector == labels and pinned == [node]
        assert not machines_of(client, ns, name)
        client.delete(WORKSPACES, name, ns)
        wait_for(lambda: gone(client, WORKSPACES, name, ns), what="workspace gone")
