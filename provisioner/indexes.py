"""The cache indexes the Machine reconciler and the Node -> Machine mapping look things up by.

Why: a Machine finds its Node by providerID (the cloud's id, set by the kubelet), and a Node event
finds its Machine by that id or by the machine-name label; scanning every cached object for each
lookup would make a reconcile O(nodes).
"""

from __future__ import annotations

from controller.api.machine import LABEL_MACHINE_NAME
from controller.runtime import Store

NODE_PROVIDER_ID_INDEX = "spec.providerID"
MACHINE_PROVIDER_ID_INDEX = "status.providerID"


def node_provider_id(node: dict) -> list[str]:
    pid = (node.get("spec") or {}).get("providerID")
    return [pid] if pid else []


def machine_provider_id(machine: dict) -> list[str]:
    pid = (machine.get("status") or {}).get("providerID")
    return [pid] if pid else []


def install_indexes(machines: Store, nodes: Store, node_label: str = LABEL_MACHINE_NAME) -> None:
    """``node_label``: the Node label naming its Machine or NodeClaim (``NodeRequest.LABEL_NODE_OF``)."""
    nodes.add_index(NODE_PROVIDER_ID_INDEX, node_provider_id)
    nodes.add_label_index(node_label)
    machines.add_index(MACHINE_PROVIDER_ID_INDEX, machine_provider_id)
