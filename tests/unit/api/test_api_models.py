"""Round trips and condition semantics of the API models (no server)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from controller.api import (
    Condition,
    Machine,
    RayService,
    Workspace,
    find_condition,
    remove_condition,
    set_condition,
)

WORKSPACE = {
    "apiVersion": "kaito.sh/v1alpha1",
    "kind": "Workspace",
    "metadata": {
        "name": "workspace-phi-3",
        "namespace": "default",
        "uid": "u-1",
        "generation": 3,
        "resourceVersion": "42",
        "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
    },
    "resource": {
        "count": 1,
        "instanceType": "Standard_NC6s_v3",
        "labelSelector": {"matchLabels": {"apps": "phi-3"}},
    },
    "inference": {
        "preset": {"name": "phi-3-mini-4k-instruct", "presetOptions": {"modelAccessSecret": "hf"}},
        "adapters": [{"source": {"name": "a1", "image": "r/a1:1"}, "strength": "0.5"}],
    },
    "status": {
        "workerNodes": ["n1"],
        "state": "Pending",
        "targetNodeCount": 1,
        "conditions": [
            {
                "type": "ResourceReady",
                "status": "False",
                "reason": "MachinesNotReady",
                "message": "waiting",
                "lastTransitionTime": "2026-01-02T03:04:05Z",
                "observedGeneration": 3,
            }
        ],
    },
}

MACHINE = {
    "apiVersion": "karpenter.sh/v1alpha5",
    "kind": "Machine",
    "metadata": {"name": "ws1a2b3c4d5", "labels": {"kaito.sh/workspace": "w"}},
    "spec": {
        "requirements": [
            {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["Standard_NC6s_v3"]}
        ],
        "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
        "startupTaints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}],
        "resources": {"requests": {"storage": "50Gi"}},
        "machineTemplateRef": {"name": "ws1a2b3c4d5"},
    },
    "status": {
        "providerID": "fake://node-1",
        "nodeName": "node-1",
        "capacity": {"nvidia.com/gpu": "1", "cpu": 6},
        "allocatable": {"nvidia.com/gpu": "1"},
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Initialized",
                "message": "",
                "lastTransitionTime": "2026-01-02T03:04:05Z",
            }
        ],
    },
}

RAYSERVICE = {
    "apiVersion": "ray.io/v1",
    "kind": "RayService",
    "metadata": {"name": "workspace-phi-3", "namespace": "default"},
    "spec": {
        "serveConfigV2": "applications:\n- name: llm\n  import_path: rayserve.app:build\n",
        "rayClusterConfig": {
            "rayVersion": "2.60.0",
            "headGroupSpec": {
                "rayStartParams": {"num-gpus": "0"},
                "template": {"spec": {"containers": [{"name": "ray-head", "image": "ray"}]}},
            },
            "workerGroupSpecs": [
                {
                    "groupName": "gpu",
                    "replicas": 1,
                    "minReplicas": 1,
                    "maxReplicas": 1,
                    "rayStartParams": {},
                    "template": {"spec": {"nodeSelector": {"a": "b"}}},
                }
            ],
        },
        "upgradeStrategy": {"type": "NewCluster"},
    },
    "status": {
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "NonZeroServeEndpoints",
                "message": "",
                "lastTransitionTime": "2026-01-02T03:04:05Z",
            }
        ],
        "serviceStatus": "Running",
        "numServeEndpoints": 1,
        "activeServiceStatus": {
            "rayClusterName": "workspace-phi-3-abcde",
            "applicationStatuses": {
                "llm": {"status": "RUNNING", "serveDeploymentStatuses": {"LLM": {"status": "HEALTHY"}}},
                "bad": {"status": "DEPLOY_FAILED", "message": "import error"},
            },
        },
    },
}


@pytest.mark.parametrize("cls,obj", [(Workspace, WORKSPACE), (Machine, MACHINE), (RayService, RAYSERVICE)])
def test_round_trip_is_exact(cls, obj):
    assert cls.from_k8s(copy.deepcopy(obj)).to_k8s() == obj


def test_workspace_accessors():
    ws = Workspace.from_k8s(WORKSPACE)
    assert ws.key == "default/workspace-phi-3"
    assert ws.preset_name == "phi-3-mini-4k-instruct"
    assert ws.resource.label_selector.match_labels == {"apps": "phi-3"}
    assert ws.inference.adapters[0].source.given_sources() == ["image"]
    ref = ws.owner_reference()
    assert ref.to_k8s() == {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "name": "workspace-phi-3",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_workspace_defaults_when_built_in_python():
    ws = Workspace(
        metadata={"name": "w", "namespace": "ns"},
        resource={"instance_type": "Standard_NC6s_v3", "label_selector": {"match_labels": {"a": "b"}}},
        tuning={
            "preset": {"name": "phi-3-mini-4k-instruct"},
            "input": {"urls": ["https://x/y.json"]},
            "output": {"volume_source": {"emptyDir": {}}},
        },
    )
    out = ws.to_k8s()
    assert out["apiVersion"] == "kaito.sh/v1beta1" and out["kind"] == "Workspace"
    assert out["resource"]["count"] == 1
    assert out["tuning"]["method"] == "lora"
    assert out["tuning"]["output"] == {"volumeSource": {"emptyDir": {}}}


def test_owner_reference_needs_uid():
    with pytest.raises(ValueError, match="no uid"):
        Workspace(metadata={"name": "w"}, resource={"label_selector": {}}).owner_reference()


def test_bad_condition_reason_is_rejected():
    with pytest.raises(ValidationError):
        Condition(type="Ready", status="True", reason="has spaces")
    with pytest.raises(ValidationError):
        Condition(type="Ready", status="Yes", reason="Ok")


def test_machine_and_rayservice_helpers():
    m = Machine.from_k8s(MACHINE)
    assert m.instance_type == "Standard_NC6s_v3"
    assert m.is_ready and m.status.provider_id == "fake://node-1"
    assert not Machine(metadata={"name": "x"}).is_ready
    r = RayService.from_k8s(RAYSERVICE)
    assert r.is_ready
    assert r.application_status("llm").status == "RUNNING"
    assert r.application_status("nope") is None
    assert r.failed_applications() == {"bad": "import error"}
    legacy = RayService.from_k8s({**RAYSERVICE, "status": {"serviceStatus": "Running"}})
    assert legacy.is_ready


T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 2, tzinfo=UTC)


def test_set_condition_semantics_match_apimachinery():
    conds: list[Condition] = []
    assert set_condition(conds, Condition(type="A", status="False", reason="R1", message="m1"), now=T0)
    assert conds[0].last_transition_time == T0
    # same everything: no change
    assert not set_condition(conds, Condition(type="A", status="False", reason="R1", message="m1"), now=T1)
    # reason/message/observedGeneration change: updated, transition time kept
    assert set_condition(
        conds, Condition(type="A", status="False", reason="R2", message="m2", observed_generation=2), now=T1
    )
    assert (conds[0].reason, conds[0].message, conds[0].observed_generation) == ("R2", "m2", 2)
    assert conds[0].last_transition_time == T0
    # status change: transition time moves
    assert set_condition(conds, Condition(type="A", status="True", reason="R3"), now=T1)
    assert conds[0].last_transition_time == T1
    # an explicit lastTransitionTime is used on a status change
    assert set_condition(conds, Condition(type="A", status="False", reason="R3", last_transition_time=T0))
    assert conds[0].last_transition_time == T0
    assert find_condition(conds, "A").status == "False"
    assert remove_condition(conds, "A") and not remove_condition(conds, "A") and conds == []


def test_workspace_set_condition_stamps_generation_and_serialises_rfc3339():
    ws = Workspace.from_k8s({**WORKSPACE, "status": None})
    assert ws.set_condition("InferenceReady", "False", "Pending", "waiting for RayService")
    assert not ws.set_condition("InferenceReady", "False", "Pending", "waiting for RayService")
    cond = ws.to_k8s()["status"]["conditions"][0]
    assert cond["observedGeneration"] == 3
    assert len(cond["lastTransitionTime"]) == 20 and cond["lastTransitionTime"].endswith("Z")
    assert not ws.is_condition_true("InferenceReady")
    ws.set_condition("InferenceReady", "True", "Ready")
    assert ws.is_condition_true("InferenceReady")


def test_kinds_point_at_storage_versions():
    from controller.api.kinds import MACHINES, RAYSERVICES, WORKSPACES

    assert WORKSPACES.api_version == "kaito.sh/v1beta1" and WORKSPACES.plural == "workspaces"
    assert MACHINES.api_version == "karpenter.sh/v1alpha5" and not MACHINES.namespaced
    assert RAYSERVICES.api_version == "ray.io/v1" and RAYSERVICES.kind == "RayService"
