"""One lifecycle, two API shapes: a NodeClaim goes the way a Machine does, in Karpenter v1's words."""

from __future__ import annotations

from test_machine_reconciler import Harness, cond

from controller.api.machine import FINALIZER_TERMINATION, LABEL_INSTANCE_TYPE, LABEL_MACHINE_NAME
from controller.api.nodeapi import NODECLAIM_API
from controller.api.nodeclaim import LABEL_NODECLAIM_NAME
from controller.runtime.kinds import NODES
from provisioner.lifecycle import phase
from provisioner.setup import node_to_machines

GPU = "nvidia.com/gpu"


def nodeclaim(name: str = "m1") -> dict:
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "metadata": {"name": name, "labels": {"kaito.sh/workspace": "w"},
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {
            "nodeClassRef": {"group": "kaito.sh", "kind": "KaitoNodeClass", "name": "default"},
            "requirements": [{"key": LABEL_INSTANCE_TYPE, "operator": "In", "values": ["Standard_Fake_GPU"]}],
            "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
            "resources": {"requests": {GPU: "1", "storage": "50Gi"}},
        },
    }


def test_a_nodeclaim_is_launched_registered_and_initialized_then_terminated() -> None:
    h = Harness(NODECLAIM_API)
    h.api.create(h.kind, nodeclaim())
    h.reconcile()
    assert h.machine()["metadata"]["finalizers"] == [FINALIZER_TERMINATION]
    h.reconcile()
    assert cond(h.machine(), "Launched")["status"] == "True"
    assert cond(h.machine(), "Registered")["reason"] == "NodeNotFound"
    assert phase(h.machine(), NODECLAIM_API.model) == "Launched"
    h.api.create(NODES, {
        "metadata": {"name": "n1", "labels": {}},
        "spec": {"providerID": "rec://i-m1", "taints": []},
        "status": {"conditions": [{"type": "Ready", "status": "True"}], "allocatable": {GPU: "1"}},
    })
    h.reconcile()
    claim = h.machine()
    pipeline = ("Launched", "Registered", "Initialized", "Ready")
    assert [cond(claim, t)["status"] for t in pipeline] == ["True"] * 4
    assert claim["status"]["nodeName"] == "n1"
    assert not any(c["type"].startswith("Machine") for c in claim["status"]["conditions"])
    node = h.api.get(NODES, "n1")
    labels = node["metadata"]["labels"]
    assert labels[LABEL_NODECLAIM_NAME] == "m1" and LABEL_MACHINE_NAME not in labels
    assert labels["kaito.sh/workspace"] == "w" and labels[LABEL_INSTANCE_TYPE] == "Standard_Fake_GPU"
    assert {"key": "sku", "value": "gpu", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert [r.name for r in node_to_machines(h.machines, NODECLAIM_API)(node)] == ["m1"]

    h.api.delete(h.kind, "m1")  # nodes first, then the instance, then the finalizer
    for _ in range(6):
        if ("nodeclaims", None, "m1") not in h.api.objects:
            break
        h.reconcile()
    assert h.cloud.deletes[-1] == "i-m1"
    assert ("nodeclaims", None, "m1") not in h.api.objects
    assert ("nodes", None, "n1") not in h.api.objects
