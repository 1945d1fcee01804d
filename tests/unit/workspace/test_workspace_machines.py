"""Machine naming and shape, and what their statuses add up to."""

from __future__ import annotations

import re

from ws_unit_helpers import workspace

from controller.api.machine import Machine
from controller.workspace import names
from controller.workspace.machines import build_machine, desired_machine_names, summarize_machines


def test_machine_names_are_deterministic_short_and_distinct() -> None:
    a = names.machine_name("team-a", "phi", 0)
    assert a == names.machine_name("team-a", "phi", 0)
    assert a != names.machine_name("team-a", "phi", 1)
    assert a != names.machine_name("team-b", "phi", 0)  # cluster-scoped: namespace is part of the name
    long = names.machine_name("n" * 63, "w" * 63, 7)
    assert len(long) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", long)


def test_rayservice_and_service_names_fit_kuberay_limits() -> None:
    assert names.rayservice_name("phi") == "phi"
    long = names.rayservice_name("a" * 60)
    assert len(long) <= 47 and long.startswith("a")
    digit = names.service_name("3phi")  # DNS-1123 ok for a workspace, not for a Service
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", digit)
    assert names.service_name("3phi") == digit  # stable


def test_machine_shape() -> None:
    ws = workspace(match_labels={"apps": "phi-3", names.LABEL_WORKSPACE: "spoof"})
    m = build_machine(ws, 1, "Standard_NC6s_v3", 50)
    parsed = Machine.model_validate(m)
    assert parsed.name == names.machine_name("team-a", "phi", 1)
    labels = m["metadata"]["labels"]
    assert labels[names.LABEL_WORKSPACE] == "phi"  # the user's selector cannot override ours
    assert labels[names.LABEL_WORKSPACE_NAMESPACE] == "team-a"
    assert labels["apps"] == "phi-3"
    assert "ownerReferences" not in m["metadata"]  # cluster-scoped: tied by labels only
    assert m["spec"]["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    assert {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["Standard_NC6s_v3"]} in m[
        "spec"
    ]["requirements"]
    assert m["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert parsed.instance_type == "Standard_NC6s_v3"


def _machine(
    name: str,
    ready: str | None = None,
    node: str | None = None,
    launched: tuple | None = None,
    deleting: bool = False,
) -> dict:
    conds = []
    if ready is not None:
        conds.append(
            {
                "type": "Ready",
                "status": ready,
                "reason": "R",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        )
    if launched is not None:
        conds.append(
            {
                "type": "MachineLaunched",
                "status": launched[0],
                "reason": launched[1],
                "message": launched[2],
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        )
    meta: dict = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "apiVersion": "karpenter.sh/v1alpha5",
        "kind": "Machine",
        "metadata": meta,
        "spec": {},
        "status": {"nodeName": node, "conditions": conds},
    }


def test_summary_ready_pending_failed_missing() -> None:
    ws = workspace()
    want = desired_machine_names(ws, 4)
    observed = [
        _machine(want[0], "True", node="node-b"),
        _machine(want[1], "False"),
        _machine(want[2], "False", launched=("False", "QuotaExceeded", "NCv3 quota is 0 in eastus")),
    ]
    s = summarize_machines(want, observed)
    assert s.ready == [want[0]] and s.worker_nodes == ["node-b"]
    assert s.pending == [want[1], want[2]] and s.missing == [want[3]]
    assert not s.all_ready
    text = s.describe()
    assert "1/4 machines ready" in text
    assert "QuotaExceeded: NCv3 quota is 0 in eastus" in text
    assert f"waiting for {want[1]}" in text


def test_summary_all_ready_sorted_nodes_and_deleting() -> None:
    want = ["m-0", "m-1"]
    s = summarize_machines(want, [_machine("m-1", "True", "n2"), _machine("m-0", "True", "n1")])
    assert s.all_ready and s.worker_nodes == ["n1", "n2"]
    s = summarize_machines(
        want, [_machine("m-0", "True", "n1"), _machine("m-1", "True", "n2", deleting=True)]
    )
    assert not s.all_ready and s.deleting == ["m-1"]
