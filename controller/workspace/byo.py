"""Bring-your-own nodes: existing nodes a Workspace uses instead of provisioning new ones.

Why: a cluster often has GPU nodes already (bought, reserved, or shared by a team). Kaito uses the
nodes a Workspace names in ``resource.preferredNodes`` before it creates Machines for the rest, and
with no provisioner at all (``--node-provisioner=byo``) a Workspace can only wait for enough
matching nodes. Such a node carries none of our owner labels (we never label a node we did not
create), so the Ray pods are pinned to it by name instead (``pin_to_nodes``). Pure functions.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from controller.api.node import Node
from controller.api.workspace import Workspace
from controller.workspace import names

PROVISION = "gpu-provisioner"  # Machines or NodeClaims for what existing nodes do not cover
BYO = "byo"  # nothing is provisioned: wait for existing nodes
NODE_PROVISIONERS = (PROVISION, BYO)


def usable_nodes(ws: Workspace, nodes: Iterable[dict], gpus_per_node: int, *, any_matching: bool
                 ) -> list[str]:
    """Existing nodes ``ws`` may use, best first: Ready, schedulable, matching its label selector,
    with ``gpus_per_node`` GPUs allocatable, not provisioned for a Workspace (ours are counted
    through their Machines, another's are not ours). The ones named in ``preferredNodes`` come first
    in their order; with ``any_matching`` (BYO mode) every other match follows, by name."""
    preferred = list(dict.fromkeys(ws.resource.preferred_nodes or []))
    found: dict[str, Node] = {}
    for raw in nodes:
        node = Node.model_validate(raw)
        owned = names.LABEL_WORKSPACE in (node.metadata.labels or {})
        if (node.usable() and not owned and node.gpus >= gpus_per_node
                and node.matches(ws.resource.label_selector)):
            found[node.name] = node
    first = [n for n in preferred if n in found]
    rest = sorted(n for n in found if n not in preferred) if any_matching else []
    return first + rest


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
