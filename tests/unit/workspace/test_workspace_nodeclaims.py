"""NodeClaims as Kaito v0.12 writes them, what their statuses add up to, and which API is chosen."""

from __future__ import annotations

import pytest
from ws_unit_helpers import workspace

from controller.api import nodeapi
from controller.api.kinds import MACHINES, NODECLAIMS
from controller.api.nodeclaim import NodeClaim
from controller.workspace import names
from controller.workspace.machines import build_node_request, summarize_machines


def test_nodeclaim_shape_is_kaito_v0_12s() -> None:
    ws = workspace(match_labels={"apps": "phi-3", "karpenter.sh/nodepool": "spoof"})
    claim = build_node_request(nodeapi.NODECLAIM_API, ws, 1, "Standard_NC6s_v3", 50)
    parsed = NodeClaim.model_validate(claim)
    assert claim["apiVersion"] == "karpenter.sh/v1" and claim["kind"] == "NodeClaim"
    assert parsed.name == names.machine_name("team-a", "phi", 1)  # the same deterministic names
    assert claim["metadata"]["labels"] == {
        "apps": "phi-3", names.LABEL_WORKSPACE: "phi", names.LABEL_WORKSPACE_NAMESPACE: "team-a",
        "karpenter.sh/nodepool": "kaito",  # the fake NodePool: Karpenter itself leaves it alone
    }
    assert claim["metadata"]["annotations"] == {"karpenter.sh/do-not-disrupt": "true",
                                                "kaito.sh/node-image-family": "ubuntu"}
    spec = claim["spec"]
    assert spec["nodeClassRef"] == {"group": "kaito.sh", "kind": "KaitoNodeClass", "name": "default"}
    assert spec["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    assert spec["requirements"] == [
        {"key": "karpenter.sh/nodepool", "operator": "In", "values": ["kaito"]},
        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["Standard_NC6s_v3"]},
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
        {"key": "karpenter.azure.com/sku-name", "operator": "In", "values": ["Standard_NC6s_v3"]},
    ]
    assert spec["resources"] == {"requests": {"storage": "50Gi"}}
    assert "machineTemplateRef" not in spec and parsed.instance_type == "Standard_NC6s_v3"


def _claim(name: str, **conds: str) -> dict:
    status = [{"type": t, "status": s, "reason": "R", "message": f"{t} says so",
               "lastTransitionTime": "2026-01-01T00:00:00Z"} for t, s in conds.items()]
    return {"metadata": {"name": name}, "spec": {}, "status": {"conditions": status, "nodeName": f"n-{name}"}}


def test_the_summary_reads_karpenter_v1_condition_names() -> None:
    observed = [_claim("a", Ready="True"), _claim("b", Launched="False", Ready="False")]
    summary = summarize_machines(["a", "b", "c"], observed, nodeapi.NODECLAIM_API)
    assert summary.ready == ["a"] and summary.worker_nodes == ["n-a"]
    assert summary.failures == {"b": "R: Launched says so"}
    assert summary.missing == ["c"]


def test_auto_prefers_nodeclaims_and_falls_back_to_machines() -> None:
    def serving(*kinds):  # type: ignore[no-untyped-def]
        return lambda _client, kind: kind in kinds

    assert nodeapi.resolve(None, "auto", serving(NODECLAIMS, MACHINES)) is nodeapi.NODECLAIM_API  # type: ignore[arg-type]
    assert nodeapi.resolve(None, "auto", serving(MACHINES)) is nodeapi.MACHINE_API  # type: ignore[arg-type]
    assert nodeapi.resolve(None, "machine", serving(NODECLAIMS)) is nodeapi.MACHINE_API  # type: ignore[arg-type]
    with pytest.raises(nodeapi.NoNodeAPI, match="nodeclaims"):
        nodeapi.resolve(None, "auto", serving())  # type: ignore[arg-type]
