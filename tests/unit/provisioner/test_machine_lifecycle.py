"""The lifecycle rules (no API server): launch requests, Node adoption, initialization, roll-up."""

from __future__ import annotations

import pytest

from controller.api.machine import (
    CONDITION_INITIALIZED,
    CONDITION_LAUNCHED,
    CONDITION_READY,
    CONDITION_REGISTERED,
    FINALIZER_TERMINATION,
    LABEL_INSTANCE_TYPE,
    LABEL_MACHINE_NAME,
    LABEL_REGISTERED,
    TAINT_NOT_READY,
    Machine,
    MachineStatus,
)
from controller.api.meta import Condition, set_condition
from provisioner import lifecycle


def machine(**spec_overrides) -> Machine:  # type: ignore[no-untyped-def]
    spec = {
        "requirements": [
            {"key": LABEL_INSTANCE_TYPE, "operator": "In", "values": ["Standard_NC24ads_A100_v4"]},
            {"key": "karpenter.sh/provisioner-name", "operator": "In", "values": ["default"]},
            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]},
        ],
        "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
        "startupTaints": [{"key": "gpu-init", "effect": "NoSchedule"}],
        "resources": {"requests": {"storage": "100Gi", "nvidia.com/gpu": 1}},
    }
    spec.update(spec_overrides)
    return Machine.from_k8s(
        {
            "apiVersion": "karpenter.sh/v1alpha5",
            "kind": "Machine",
            "metadata": {
                "name": "ws0a1b2c3d4",
                "uid": "u-1",
                "labels": {"kaito.sh/workspace": "phi-3", "karpenter.sh/provisioner-name": "custom"},
            },
            "spec": spec,
        }
    )


def node(ready: bool = True, taints: list | None = None, gpus: str = "1", labels: dict | None = None) -> dict:
    return {
        "metadata": {"name": "n1", "labels": labels or {}},
        "spec": {"providerID": "fake://n1", "taints": taints or []},
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "allocatable": {"cpu": "24", "nvidia.com/gpu": gpus},
        },
    }


def test_launch_request_from_machine() -> None:
    req = lifecycle.launch_request(machine())
    assert req.instance_type == "Standard_NC24ads_A100_v4"
    assert req.machine_name == "ws0a1b2c3d4" and req.machine_uid == "u-1"
    # single-value requirements become labels; the Machine's own labels win
    assert req.labels["karpenter.sh/provisioner-name"] == "custom"
    assert req.labels[LABEL_INSTANCE_TYPE] == "Standard_NC24ads_A100_v4"
    assert "kubernetes.io/arch" not in req.labels
    assert [t.to_azure() for t in req.taints] == ["sku=gpu:NoSchedule"]
    assert [t.key for t in req.startup_taints] == ["gpu-init"]
    assert req.requests == {"storage": "100Gi", "nvidia.com/gpu": "1"}
    assert req.os_disk_gb == 100


@pytest.mark.parametrize(("storage", "gib"), [("1Ti", 1024), ("500G", 466), ("1", 1), ("bogus", None)])
def test_os_disk_size(storage: str, gib: int | None) -> None:
    assert lifecycle.launch_request(machine(resources={"requests": {"storage": storage}})).os_disk_gb == gib


def test_machine_without_instance_type_is_invalid() -> None:
    with pytest.raises(lifecycle.InvalidMachine, match="instance-type"):
        lifecycle.launch_request(machine(requirements=[]))


def test_registration_adopts_the_node_once() -> None:
    m = machine()
    before = node(taints=[{"key": "gpu-init", "effect": "NoSchedule"}])
    after = lifecycle.registered_node(before, m)
    assert before["metadata"].get("finalizers") is None, "input untouched"
    assert after["metadata"]["finalizers"] == [FINALIZER_TERMINATION]
    labels = after["metadata"]["labels"]
    assert labels[LABEL_MACHINE_NAME] == "ws0a1b2c3d4"
    assert labels[LABEL_REGISTERED] == "true"
    assert labels["kaito.sh/workspace"] == "phi-3"
    assert after["spec"]["taints"] == [
        {"key": "gpu-init", "effect": "NoSchedule"},
        {"key": "sku", "value": "gpu", "effect": "NoSchedule"},
    ]
    # once registered, a removed startup taint is not put back
    after["spec"]["taints"] = [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    again = lifecycle.registered_node(after, m)
    assert again == after


@pytest.mark.parametrize(
    ("n", "reason"),
    [
        (node(ready=False), "NodeNotReady"),
        (node(taints=[{"key": "gpu-init", "effect": "NoSchedule"}]), "StartupTaintsExist"),
        (node(taints=[{"key": TAINT_NOT_READY, "effect": "NoSchedule"}]), "EphemeralTaintsExist"),
        (node(gpus="0"), "ResourceNotRegistered"),
        (node(taints=[{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]), "Initialized"),
    ],
)
def test_initialization(n: dict, reason: str) -> None:
    done, got, message = lifecycle.initialization(n, machine())
    assert got == reason and done == (reason == "Initialized")
    assert "n1" in message


def test_storage_request_does_not_gate_initialization() -> None:
    n = node()
    assert "storage" not in n["status"]["allocatable"]
    assert lifecycle.initialization(n, machine())[0]


def _with(m: Machine, *conds: tuple[str, str, str]) -> Machine:
    conditions: list[Condition] = []
    for type_, status, reason in conds:
        set_condition(conditions, Condition(type=type_, status=status, reason=reason))  # type: ignore[arg-type]
    m.status = MachineStatus(conditions=conditions)
    return m


def test_ready_rolls_up() -> None:
    launched = (CONDITION_LAUNCHED, "True", "Launched")
    registered = (CONDITION_REGISTERED, "True", "Registered")
    initialized = (CONDITION_INITIALIZED, "True", "Initialized")
    assert lifecycle.ready_condition(_with(machine())).reason == "AwaitingReconciliation"
    failed = lifecycle.ready_condition(_with(machine(), (CONDITION_LAUNCHED, "False", "QuotaExceeded")))
    assert (failed.status, failed.reason) == ("False", "QuotaExceeded")
    waiting = lifecycle.ready_condition(
        _with(machine(), launched, (CONDITION_REGISTERED, "Unknown", "NodeNotFound"))
    )
    assert (waiting.status, waiting.reason) == ("Unknown", "NodeNotFound")
    assert lifecycle.ready_condition(_with(machine(), launched, registered, initialized)).status == "True"


@pytest.mark.parametrize(
    ("conds", "deleting", "phase"),
    [
        ([], False, "Pending"),
        ([(CONDITION_LAUNCHED, "Unknown")], False, "Launching"),
        ([(CONDITION_LAUNCHED, "False")], False, "LaunchFailed"),
        ([(CONDITION_LAUNCHED, "True")], False, "Launched"),
        ([(CONDITION_LAUNCHED, "True"), (CONDITION_REGISTERED, "True")], False, "Registered"),
        ([(CONDITION_READY, "True")], False, "Ready"),
        ([(CONDITION_READY, "True")], True, "Deleting"),
    ],
)
def test_phase(conds: list[tuple[str, str]], deleting: bool, phase: str) -> None:
    obj = {
        "metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {},
        "status": {"conditions": [{"type": t, "status": s} for t, s in conds]},
    }
    assert lifecycle.phase(obj) == phase
