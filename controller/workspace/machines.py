"""The Machines (or NodeClaims) a workspace needs: their manifests, and what their status says.

Both API shapes (``controller.api.nodeapi``) are built here from one set of inputs: Machines with
the Kaito v0.3 vocabulary, NodeClaims with Kaito v0.12's (``pkg/utils/nodeclaim/nodeclaim.go``:
the fake ``kaito`` NodePool label and requirement, the KaitoNodeClass reference, the Azure SKU
requirement, the do-not-disrupt and node-image-family annotations), so gpu-provisioner and
Karpenter's Azure provider read ours as Kaito's. The summary reads either through ``NodeRequest``.

Pure functions over plain inputs so the shape can be unit-tested without a server. Machines are
cluster-scoped, so they cannot carry an ownerReference to a namespaced Workspace; they are tied to
it by the ``kaito.sh/workspace`` / ``kaito.sh/workspacenamespace`` labels (which the provisioner
copies onto the Node, so pods can be pinned to the workspace's nodes by the same labels).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from controller.api import nodeclaim as nc
from controller.api.machine import (
    LABEL_INSTANCE_TYPE,
    LABEL_MACHINE_TYPE,
    LABEL_OS,
    LABEL_PROVISIONER_NAME,
    Machine,
    NodeRequest,
)
from controller.api.nodeapi import MACHINE_API, NodeAPI
from controller.api.nodeclaim import NodeClaim
from controller.api.workspace import Workspace
from controller.workspace import names

# Reserved keys a user's labelSelector may not override on our Machines.
_RESERVED = (names.LABEL_WORKSPACE, names.LABEL_WORKSPACE_NAMESPACE, LABEL_PROVISIONER_NAME,
             nc.LABEL_NODEPOOL)


def _user_and_owner_labels(ws: Workspace) -> dict[str, str]:
    """The labelSelector's matchLabels (so the nodes match the user's selector) + owner labels."""
    user = dict(ws.resource.label_selector.match_labels or {})
    for key in _RESERVED:
        user.pop(key, None)
    return {**user, **names.owner_labels(ws.namespace or "", ws.name)}


def machine_labels(ws: Workspace) -> dict[str, str]:
    """A Machine's labels: user and owner labels + the provisioner's and machine type's."""
    return {
        **_user_and_owner_labels(ws),
        LABEL_PROVISIONER_NAME: names.PROVISIONER_NAME,
        LABEL_MACHINE_TYPE: "gpu",
    }


def nodeclaim_labels(ws: Workspace) -> dict[str, str]:
    """A NodeClaim's labels (Kaito v0.12): user and owner labels + the fake ``kaito`` NodePool."""
    return {**_user_and_owner_labels(ws), nc.LABEL_NODEPOOL: nc.KAITO_NODEPOOL}


def _gpu_taint() -> dict:
    return {"key": names.GPU_TAINT_KEY, "value": names.GPU_TAINT_VALUE, "effect": names.GPU_TAINT_EFFECT}


def _storage(disk_gib: int | None) -> dict:
    return {"resources": {"requests": {"storage": f"{int(disk_gib)}Gi"}}} if disk_gib else {}


def build_machine(ws: Workspace, index: int, instance_type: str, disk_gib: int | None) -> dict:
    """The ``index``-th Machine of ``ws``: one node of ``instance_type`` with a ``disk_gib`` OS disk."""
    spec: dict = {
        "requirements": [
            {"key": LABEL_INSTANCE_TYPE, "operator": "In", "values": [instance_type]},
            {"key": LABEL_PROVISIONER_NAME, "operator": "In", "values": [names.PROVISIONER_NAME]},
            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
        ],
        "taints": [_gpu_taint()],
        "machineTemplateRef": {"name": names.PROVISIONER_NAME},
        **_storage(disk_gib),
    }
    machine = Machine.model_validate({
        "metadata": {
            "name": names.machine_name(ws.namespace or "", ws.name, index),
            "labels": machine_labels(ws),
            "annotations": {names.ANNOTATION_DO_NOT_DISRUPT: "true"},
        },
        "spec": spec,
    })
    return machine.to_k8s()


def build_nodeclaim(ws: Workspace, index: int, instance_type: str, disk_gib: int | None) -> dict:
    """The ``index``-th NodeClaim of ``ws``, as Kaito v0.12 writes one for Azure."""
    spec: dict = {
        "nodeClassRef": {"group": nc.NODE_CLASS_GROUP, "kind": nc.NODE_CLASS_KIND,
                         "name": nc.NODE_CLASS_NAME},
        "taints": [_gpu_taint()],
        "requirements": [
            {"key": nc.LABEL_NODEPOOL, "operator": "In", "values": [nc.KAITO_NODEPOOL]},
            {"key": LABEL_INSTANCE_TYPE, "operator": "In", "values": [instance_type]},
            {"key": LABEL_OS, "operator": "In", "values": ["linux"]},
            {"key": nc.LABEL_AZURE_SKU, "operator": "In", "values": [instance_type]},
        ],
        **_storage(disk_gib),
    }
    claim = NodeClaim.model_validate({
        "metadata": {
            "name": names.machine_name(ws.namespace or "", ws.name, index),
            "labels": nodeclaim_labels(ws),
            "annotations": {names.ANNOTATION_DO_NOT_DISRUPT: "true",
                            nc.ANNOTATION_NODE_IMAGE_FAMILY: nc.NODE_IMAGE_FAMILY},
        },
        "spec": spec,
    })
    return claim.to_k8s()


def build_node_request(api: NodeAPI, ws: Workspace, index: int, instance_type: str,
                       disk_gib: int | None) -> dict:
    """The ``index``-th node object of ``ws`` in the API shape ``api`` names."""
    build = build_nodeclaim if api.model is NodeClaim else build_machine
    return build(ws, index, instance_type, disk_gib)


def desired_machine_names(ws: Workspace, count: int) -> list[str]:
    return [names.machine_name(ws.namespace or "", ws.name, i) for i in range(count)]


@dataclass
class MachineSummary:
    """What the workspace's Machines say, for the ResourceReady condition."""

    desired: int
    ready: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    deleting: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # machine -> "Reason: message"
    worker_nodes: list[str] = field(default_factory=list)
    # why a Machine being deleted failed (the provisioner's RegistrationTimeout, say): the reason
    # its re-creation is counted with (controller/workspace/relaunch.py)
    gone_reasons: dict[str, str] = field(default_factory=dict)
    relaunch_in: float | None = None  # a re-creation waits out its backoff this many seconds
    gave_up: str | None = None  # the re-creation limit is reached: why, for ResourceReady
    # bring-your-own nodes (controller/workspace/byo.py): existing nodes used before Machines, and
    # how many nodes the workspace needs in all; with ``provisions`` False nothing is provisioned
    existing_nodes: list[str] = field(default_factory=list)
    node_target: int | None = None  # None: ``desired`` (no existing nodes in the count)
    provisions: bool = True
    wait_hint: str = ""  # which nodes are waited for (BYO mode), for the message

    @property
    def target(self) -> int:
        return self.desired if self.node_target is None else self.node_target

    @property
    def all_ready(self) -> bool:
        return self.target > 0 and len(self.ready) + len(self.existing_nodes) >= self.target

    def with_existing(self, nodes: list[str], target: int, provisions: bool = True,
                      wait_hint: str = "") -> MachineSummary:
        """This summary, counting the existing ``nodes`` towards ``target`` nodes in all."""
        self.existing_nodes, self.node_target = list(nodes), target
        self.provisions, self.wait_hint = provisions, wait_hint
        self.worker_nodes = sorted({*self.worker_nodes, *nodes})
        return self

    def describe(self) -> str:
        """One line a person can act on: counts, then what is waited on or what failed."""
        if not self.provisions:
            have = len(self.existing_nodes)
            line = f"{have}/{self.target} matching nodes ready"
            if have < self.target:
                line += (f"; waiting for {self.target - have} more: {self.wait_hint} (--node-provisioner="
                         f"byo provisions nothing)")
            return line
        parts = [f"{len(self.ready)}/{self.desired} machines ready"]
        if self.existing_nodes:
            parts.insert(0, f"existing nodes used: {', '.join(self.existing_nodes)}")
        if self.failures:
            parts.append("failed: " + "; ".join(f"{m}: {msg}" for m, msg in sorted(self.failures.items())))
        waiting = [m for m in self.pending if m not in self.failures]
        if waiting:
            parts.append("waiting for " + ", ".join(waiting))
        if self.missing and self.relaunch_in is not None:
            parts.append(f"re-creating {', '.join(self.missing)} in {self.relaunch_in:.0f}s (backoff)")
        elif self.missing and not self.gave_up:
            parts.append("creating " + ", ".join(self.missing))
        if self.gave_up:
            parts.append(self.gave_up)
        if self.deleting:
            parts.append("being deleted: " + ", ".join(self.deleting))
        return "; ".join(parts)


def _failure(machine: NodeRequest) -> str | None:
    """The message of the first launch-pipeline condition that is False with a message."""
    for type_ in (*machine.pipeline, machine.CONDITION_READY):
        cond = machine.condition(type_)
        if cond is not None and cond.status == "False" and cond.message:
            return f"{cond.reason}: {cond.message}"
    return None


def summarize_machines(desired: Iterable[str], observed: Iterable[dict], api: NodeAPI = MACHINE_API
                       ) -> MachineSummary:
    """Compare the desired Machine (or NodeClaim) names with the objects the cache holds."""
    want = list(desired)
    by_name = {(m.get("metadata") or {}).get("name"): m for m in observed}
    summary = MachineSummary(desired=len(want))
    nodes: set[str] = set()
    for name in want:
        raw = by_name.get(name)
        if raw is None:
            summary.missing.append(name)
            continue
        machine = api.parse(raw)
        if machine.metadata.deletion_timestamp:
            summary.deleting.append(name)
            if (gone := _failure(machine)) is not None:
                summary.gone_reasons[name] = gone
            continue
        if machine.is_ready:
            summary.ready.append(name)
            if machine.status and machine.status.node_name:
                nodes.add(machine.status.node_name)
            continue
        summary.pending.append(name)
        failure = _failure(machine)
        if failure:
            summary.failures[name] = failure
    summary.worker_nodes = sorted(nodes)
    return summary

