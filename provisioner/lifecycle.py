"""Pure functions of the Machine (or NodeClaim: ``NodeRequest``) lifecycle: what to ask the cloud
for, how a Node is adopted, when it counts as initialized, and how conditions roll up.

Why apart from the controller: these are the rules (Karpenter v1alpha5 semantics, see
shared/research/karpenter.md §2) and they are easiest to get right, and to test, without an API
server, a queue or a clock. The controller only sequences them and writes the results.
"""

from __future__ import annotations

import copy
import re
from datetime import datetime

from controller.api.machine import (
    EPHEMERAL_TAINT_KEYS,
    FINALIZER_TERMINATION,
    LABEL_INSTANCE_TYPE,
    LABEL_REGISTERED,
    Machine,
    NodeRequest,
)
from controller.api.meta import Condition
from provisioner.cloud.base import LaunchRequest, Taint

# Requested resources that no node reports as allocatable: Kaito asks for ``storage`` (the OS disk),
# which gpu-provisioner also skips when deciding whether a node is initialized.
IGNORED_REQUESTS = frozenset({"storage"})

PHASES = ("Pending", "Launching", "LaunchFailed", "Launched", "Registered", "Ready", "Deleting")


class InvalidMachine(ValueError):
    """The Machine cannot be launched as written (a person must fix it; retrying will not help)."""


def single_value_labels(machine: NodeRequest) -> dict[str, str]:
    """Labels implied by requirements of the form ``key In [one value]``."""
    out: dict[str, str] = {}
    for req in machine.spec.requirements or ():
        if req.operator == "In" and req.values and len(req.values) == 1:
            out[req.key] = req.values[0]
    return out


def node_labels(machine: NodeRequest) -> dict[str, str]:
    """Labels the Node should carry: single-value requirements, overridden by the Machine's labels."""
    return {**single_value_labels(machine), **(machine.metadata.labels or {})}


def _taints(items: list | None) -> tuple[Taint, ...]:
    return tuple(Taint(key=t.key, value=t.value or "", effect=t.effect) for t in items or ())


def _gib(quantity: str | int) -> int | None:
    """A storage quantity in whole GiB (rounded up); None if it cannot be read."""
    units = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "K": 10**3,
        "M": 10**6,
        "G": 10**9,
        "T": 10**12,
    }
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?)?", str(quantity).strip())
    if not m:
        return None
    size = float(m.group(1)) * units.get(m.group(2) or "", 1)
    return max(1, -(-int(size) // 2**30))


def launch_request(machine: NodeRequest) -> LaunchRequest:
    """What the cloud needs from this Machine; ``InvalidMachine`` when it names no instance type."""
    instance_type = machine.instance_type
    if not instance_type:
        raise InvalidMachine(
            f"machine {machine.name} has no requirement '{LABEL_INSTANCE_TYPE} In [<sku>]'"
        )
    requests = {
        k: str(v) for k, v in ((machine.spec.resources and machine.spec.resources.requests) or {}).items()
    }
    storage = requests.get("storage")
    return LaunchRequest(
        machine_name=machine.name,
        machine_uid=machine.metadata.uid or "",
        instance_type=instance_type,
        labels=node_labels(machine),
        taints=_taints(machine.spec.taints),
        startup_taints=_taints(machine.spec.startup_taints),
        requests=requests,
        os_disk_gb=_gib(storage) if storage else None,
    )


def registered_node(node: dict, machine: NodeRequest) -> dict:
    """The Node after adoption by ``machine`` (a copy): finalizer, labels, and, the first time only,
    the Machine's taints and startup taints (later the startup taints are someone else's to remove)."""
    node = copy.deepcopy(node)
    meta = node.setdefault("metadata", {})
    finalizers = meta.setdefault("finalizers", [])
    if FINALIZER_TERMINATION not in finalizers:
        finalizers.append(FINALIZER_TERMINATION)
    labels = meta.setdefault("labels", {})
    first_time = labels.get(LABEL_REGISTERED) != "true"
    labels.update(node_labels(machine))
    if len(machine.name) <= 63:
        labels[machine.LABEL_NODE_OF] = machine.name
    labels[LABEL_REGISTERED] = "true"
    if first_time:
        spec = node.setdefault("spec", {})
        taints = list(spec.get("taints") or [])
        present = {(t.get("key"), t.get("effect")) for t in taints}
        for t in (*_taints(machine.spec.taints), *_taints(machine.spec.startup_taints)):
            if (t.key, t.effect) not in present:
                taints.append(t.to_k8s())
                present.add((t.key, t.effect))
        spec["taints"] = taints
    return node


def _quantity_is_zero(value: object) -> bool:
    text = str(value).strip()
    return (
        text in ("", "0", "0m", "0Ki", "0Mi", "0Gi") or re.fullmatch(r"0+(\.0*)?[a-zA-Z]*", text) is not None
    )


def node_ready(node: dict) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def initialization(node: dict, machine: NodeRequest) -> tuple[bool, str, str]:
    """Whether ``node`` is initialized for ``machine`` and, if not, why (reason, message).

    Ready, no startup taint and no boot-time taint left, and every requested resource (but
    ``storage``) allocatable: that last rule is what makes ``nvidia.com/gpu`` gate readiness,
    since kubelet reports it as 0 until the device plugin registers.
    """
    name = node.get("metadata", {}).get("name", "")
    if not node_ready(node):
        return False, "NodeNotReady", f"node {name} is not ready"
    taints = (node.get("spec") or {}).get("taints") or []
    startup = {(t.key, t.effect) for t in _taints(machine.spec.startup_taints)}
    left = [t for t in taints if (t.get("key"), t.get("effect")) in startup]
    if left:
        return False, "StartupTaintsExist", f"startup taints still on node {name}: {_taint_list(left)}"
    booting = [t for t in taints if t.get("key") in EPHEMERAL_TAINT_KEYS]
    if booting:
        return False, "EphemeralTaintsExist", f"node {name} still has {_taint_list(booting)}"
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    requests = (machine.spec.resources and machine.spec.resources.requests) or {}
    missing = sorted(
        r
        for r, v in requests.items()
        if r not in IGNORED_REQUESTS
        and not _quantity_is_zero(v)
        and _quantity_is_zero(allocatable.get(r, "0"))
    )
    if missing:
        return False, "ResourceNotRegistered", f"node {name} has no allocatable {', '.join(missing)} yet"
    return True, "Initialized", f"node {name} is ready and its resources are allocatable"


def _taint_list(taints: list[dict]) -> str:
    return ", ".join(f"{t.get('key')}:{t.get('effect')}" for t in taints)


def condition(machine: NodeRequest, type_: str) -> Condition | None:
    return machine.condition(type_)


def is_true(machine: NodeRequest, type_: str) -> bool:
    cond = machine.condition(type_)
    return cond is not None and cond.status == "True"


def transition_time(machine: NodeRequest, type_: str) -> datetime | None:
    cond = machine.condition(type_)
    return cond.last_transition_time if cond is not None else None


def ready_condition(machine: NodeRequest) -> Condition:
    """Ready rolls up Launched, Registered, Initialized (knative living set): False if any is
    False, else Unknown if any is not True yet, else True. Reason and message come from the first
    condition that is not True, so the Machine's Ready says what it is waiting for."""
    parts = [machine.condition(t) for t in machine.pipeline]
    if all(c is not None and c.status == "True" for c in parts):
        return Condition(type=machine.CONDITION_READY, status="True", reason="Ready", message="")
    failed = next((c for c in parts if c is not None and c.status == "False"), None)
    if failed is not None:
        return Condition(
            type=machine.CONDITION_READY, status="False", reason=failed.reason, message=failed.message
        )
    waiting = next((c for c in parts if c is not None and c.status != "True"), None)
    if waiting is not None:
        return Condition(
            type=machine.CONDITION_READY, status="Unknown", reason=waiting.reason, message=waiting.message
        )
    return Condition(
        type=machine.CONDITION_READY, status="Unknown", reason="AwaitingReconciliation", message=""
    )


def phase(machine: dict, model: type[NodeRequest] = Machine) -> str:
    """One word for dashboards (the ``kaito_provisioner_machines`` gauge)."""
    if (machine.get("metadata") or {}).get("deletionTimestamp"):
        return "Deleting"
    conds = {c.get("type"): c for c in (machine.get("status") or {}).get("conditions") or []}

    def status(t: str) -> str | None:
        return conds[t].get("status") if t in conds else None

    if status(model.CONDITION_READY) == "True":
        return "Ready"
    if status(model.CONDITION_REGISTERED) == "True":
        return "Registered"
    if status(model.CONDITION_LAUNCHED) == "True":
        return "Launched"
    if status(model.CONDITION_LAUNCHED) == "False":
        return "LaunchFailed"
    if status(model.CONDITION_LAUNCHED) == "Unknown":
        return "Launching"
    return "Pending"
