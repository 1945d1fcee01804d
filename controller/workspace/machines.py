"""The Machines a workspace needs: their manifests, and what their status says.

Pure functions over plain inputs so the shape can be unit-tested without a server. Machines are
cluster-scoped, so they cannot carry an ownerReference to a namespaced Workspace; they are tied to
it by the ``kaito.sh/workspace`` / ``kaito.sh/workspacenamespace`` labels (which the provisioner
copies onto the Node, so pods can be pinned to the workspace's nodes by the same labels).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from controller.api.machine import (
    CONDITION_INITIALIZED,
    CONDITION_LAUNCHED,
    CONDITION_READY,
    CONDITION_REGISTERED,
    LABEL_INSTANCE_TYPE,
    LABEL_MACHINE_TYPE,
    LABEL_PROVISIONER_NAME,
    Machine,
)
from controller.api.workspace import Workspace
from controller.workspace import names

# Reserved keys a user's labelSelector may not override on our Machines.
_RESERVED = (names.LABEL_WORKSPACE, names.LABEL_WORKSPACE_NAMESPACE, LABEL_PROVISIONER_NAME)


def machine_labels(ws: Workspace) -> dict[str, str]:
    """Owner labels + the labelSelector's matchLabels (so the nodes match the user's selector)."""
    user = dict(ws.resource.label_selector.match_labels or {})
    for key in _RESERVED:
        user.pop(key, None)
    return {
        **user,
        **names.owner_labels(ws.namespace or "", ws.name),
        LABEL_PROVISIONER_NAME: names.PROVISIONER_NAME,
        LABEL_MACHINE_TYPE: "gpu",
    }


def build_machine(ws: Workspace, index: int, instance_type: str, disk_gib: int | None) -> dict:
    """The ``index``-th Machine of ``ws``: one node of ``instance_type`` with a ``disk_gib`` OS disk."""
    spec: dict = {
        "requirements": [
            {"key": LABEL_INSTANCE_TYPE, "operator": "In", "values": [instance_type]},
            {"key": LABEL_PROVISIONER_NAME, "operator": "In", "values": [names.PROVISIONER_NAME]},
            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
        ],
        "taints": [{"key": names.GPU_TAINT_KEY, "value": names.GPU_TAINT_VALUE,
                    "effect": names.GPU_TAINT_EFFECT}],
        "machineTemplateRef": {"name": names.PROVISIONER_NAME},
    }
    if disk_gib:
        spec["resources"] = {"requests": {"storage": f"{int(disk_gib)}Gi"}}
    machine = Machine.model_validate({
        "metadata": {
            "name": names.machine_name(ws.namespace or "", ws.name, index),
            "labels": machine_labels(ws),
            "annotations": {names.ANNOTATION_DO_NOT_DISRUPT: "true"},
        },
        "spec": spec,
    })
    return machine.to_k8s()


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

    @property
    def all_ready(self) -> bool:
        return self.desired > 0 and len(self.ready) >= self.desired

    def describe(self) -> str:
        """One line a person can act on: counts, then what is waited on or what failed."""
        parts = [f"{len(self.ready)}/{self.desired} machines ready"]
        if self.failures:
            parts.append("failed: " + "; ".join(f"{m}: {msg}" for m, msg in sorted(self.failures.items())))
        waiting = [m for m in self.pending if m not in self.failures]
        if waiting:
            parts.append("waiting for " + ", ".join(waiting))
        if self.missing:
            parts.append("creating " + ", ".join(self.missing))
        if self.deleting:
            parts.append("being deleted: " + ", ".join(self.deleting))
        return "; ".join(parts)


def _failure(machine: Machine) -> str | None:
    """The message of the first launch-pipeline condition that is False with a message."""
    for type_ in (CONDITION_LAUNCHED, CONDITION_REGISTERED, CONDITION_INITIALIZED, CONDITION_READY):
        cond = machine.condition(type_)
        if cond is not None and cond.status == "False" and cond.message:
            return f"{cond.reason}: {cond.message}"
    return None


def summarize_machines(desired: Iterable[str], observed: Iterable[dict]) -> MachineSummary:
    """Compare the desired Machine names with the Machines the cache holds."""
    want = list(desired)
    by_name = {(m.get("metadata") or {}).get("name"): m for m in observed}
    summary = MachineSummary(desired=len(want))
    nodes: set[str] = set()
    for name in want:
        raw = by_name.get(name)
        if raw is None:
            summary.missing.append(name)
            continue
        machine = Machine.model_validate(raw)
        if machine.metadata.deletion_timestamp:
            summary.deleting.append(name)
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

