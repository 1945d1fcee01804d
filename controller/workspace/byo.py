"""Bring-your-own nodes: existing nodes a Workspace uses instead of provisioning new ones.

Why: a cluster often has GPU nodes already (bought, reserved, or shared by a team). Kaito uses the
nodes a Workspace names in ``resource.preferredNodes`` before it creates Machines for the rest, and
with no provisioner at all (``--node-provisioner=byo``) a Workspace can only wait for enough
matching nodes. Such a node carries none of our owner labels (we never label a node we did not
create), so the Ray pods are pinned to it by name instead (``pin_to_nodes``). A partitioned
Workspace (``resource.partition``, Kaito v0.12) only ever runs on such nodes: its workers ask for
``count`` whole GPUs or one MIG slice (``partition_resource``), and it is planned from what its node
is (``partition_sku``). Pure functions.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from controller.api.node import GPU_RESOURCE, Node, mig_resource
from controller.api.workspace import Workspace
from controller.workspace import names
from presets.registry import Catalog, GpuSku

PROVISION = "gpu-provisioner"  # Machines or NodeClaims for what existing nodes do not cover
BYO = "byo"  # nothing is provisioned: wait for existing nodes
NODE_PROVISIONERS = (PROVISION, BYO)


class NoPartitionNode(ValueError):
    """No existing node can hold the partition yet (or its labels do not say what its GPUs are)."""


def partition_resource(ws: Workspace) -> str:
    """The extended resource a worker of ``ws`` asks for: a MIG profile's, else whole GPUs."""
    part = ws.resource.partition
    return mig_resource(part.profile) if part and part.mode == "mig" and part.profile else GPU_RESOURCE


def partition_devices(ws: Workspace) -> int:
    """Devices of ``partition_resource`` one worker asks for: ``count`` GPUs, or one MIG slice."""
    part = ws.resource.partition
    return 1 if part is None or part.mode == "mig" else part.count or 1


def usable_nodes(ws: Workspace, nodes: Iterable[dict], gpus_per_node: int, *, any_matching: bool
                 ) -> list[str]:
    """Existing nodes ``ws`` may use, best first: Ready, schedulable, matching its label selector,
    with ``gpus_per_node`` devices of its resource (``partition_resource``) allocatable, not
    provisioned for a Workspace (ours are counted through their Machines, another's are not
    ours). The ones named in ``preferredNodes`` come first in their order; with ``any_matching``
    (BYO mode, a partition) every other match follows, by name."""
    preferred = list(dict.fromkeys(ws.resource.preferred_nodes or []))
    resource = partition_resource(ws)
    found: dict[str, Node] = {}
    for raw in nodes:
        node = Node.model_validate(raw)
        owned = names.LABEL_WORKSPACE in (node.metadata.labels or {})
        if (node.usable() and not owned and node.allocatable_count(resource) >= gpus_per_node
                and node.matches(ws.resource.label_selector)):
            found[node.name] = node
    first = [n for n in preferred if n in found]
    rest = sorted(n for n in found if n not in preferred) if any_matching else []
    return first + rest


def partition_sku(ws: Workspace, nodes: Iterable[dict], catalog: Catalog) -> GpuSku:
    """What one node of a partitioned ``ws`` offers a replica, as the estimator sees a SKU: its
    first usable node's GPUs (GPU Feature Discovery's labels) and memory, scaled to ``count`` GPUs
    (mode accelerator, as Kaito's ``ScaleGPUConfigToCount``) or one slice of the MIG profile.

    Raises ``NoPartitionNode`` (a message saying what is awaited) when no node qualifies yet."""
    part = ws.resource.partition
    assert part is not None, "partition_sku is for partitioned workspaces"
    devices, resource = partition_devices(ws), partition_resource(ws)
    found = usable_nodes(ws, nodes, devices, any_matching=True)
    if not found:
        raise NoPartitionNode(f"no Ready node with labels {selector_text(ws)} and {devices} allocatable "
                              f"{resource} yet (a partitioned workspace uses existing nodes only)")
    node = Node.model_validate(next(n for n in nodes if (n.get("metadata") or {}).get("name") == found[0]))
    facts = node.gpu_facts()
    if isinstance(facts, str):
        raise NoPartitionNode(facts)
    if part.mode == "mig":
        profile = catalog.mig_profiles[part.profile or ""]
        return profile.slice_sku(facts.memory_gib, facts.vcpus, facts.cuda_compute, facts.gpu_model)
    return GpuSku(name=f"{devices} of node {node.name}'s GPUs", gpu_count=devices,
                  gpu_memory_gib=facts.gpu_memory_gib, gpu_model=facts.gpu_model,
                  cuda_compute=facts.cuda_compute, vcpus=facts.vcpus, memory_gib=facts.memory_gib)


def selector_text(ws: Workspace) -> str:
    """The label selector, as ``kubectl get nodes -l`` takes it (for a message)."""
    sel = ws.resource.label_selector
    terms = [f"{k}={v}" for k, v in sorted((sel.match_labels or {}).items())]
    terms += [f"{r.key} {r.operator} ({','.join(r.values or [])})" for r in sel.match_expressions or []]
    return ",".join(terms) or "(any)"


def pin_to_nodes(rayservice: dict, ws: Workspace, nodes: list[str]) -> dict:
    """``rayservice`` with its Ray pods pinned to ``nodes`` by name and the label selector's
    matchLabels (the owner labels only our provisioned nodes carry are dropped from the
    nodeSelector); the worker group's other affinity (one worker per node) is kept."""
    out = copy.deepcopy(rayservice)
    cluster = out["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *(cluster.get("workerGroupSpecs") or [])]
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": sorted(nodes)}]}
    for group in groups:
        spec = group["template"].setdefault("spec", {})
        spec.pop("nodeSelector", None)
        if ws.resource.label_selector.match_labels:
            spec["nodeSelector"] = dict(ws.resource.label_selector.match_labels)
        affinity = spec.setdefault("affinity", {})
        affinity["nodeAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [term]}}
    return out
