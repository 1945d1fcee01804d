"""The main job, end to end: kubectl apply a Workspace, get a /chat answer, delete it cleanly.

Every piece is a real process (kube-apiserver + etcd, controller with its webhook, provisioner
over the fake GPU cloud, the KubeRay stand-in with a local Ray head, Prometheus), driven by
the same LocalStack the README's demo uses. One test walks the whole loop in order, because
each step needs the previous one and the stack costs ~a minute to start.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from controller.api.workspace import INFERENCE_PHASES
from hack.fake_hf_hub import FakeHub
from hack.localstack import REPO, LocalStack, phase_table
from hack.tiny_model import DEFAULT_DIR, ensure_tiny_model

pytestmark = pytest.mark.e2e
SAMPLE = REPO / "config" / "samples" / "workspace_tiny_phi_3.yaml"
# a model id the catalog does not list, served by the local hub (the tiny checkpoint's files)
UNCATALOGUED = "kaito-test/tiny-phi-3-uncatalogued"


def _wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _uncatalogued_model_goes_ready_and_answers(stack: LocalStack, hub: FakeHub, tmp_path: Path) -> None:
    """An id the catalog lacks: the controller reads it from the hub and sizes it from its config,
    the serve replica downloads it by its id (the weights go over the wire) and answers /chat."""
    manifest = {
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "ws-uncatalogued"},
        "resource": {"instanceType": "Standard_Fake_GPU",
                     "labelSelector": {"matchLabels": {"apps": "uncat"}}},
        "inference": {"preset": {"name": UNCATALOGUED}},
    }
    path = tmp_path / "uncatalogued.yaml"
    path.write_text(yaml.safe_dump(manifest))
    applied = stack.kubectl("apply", "-f", str(path))
    assert "created" in applied, applied
    ws = stack.wait_workspace("ws-uncatalogued", "default", timeout=600)
    resource = next(c for c in ws["status"]["conditions"] if c["type"] == "ResourceReady")
    assert f"Sized from {UNCATALOGUED}'s config.json" in resource["message"], resource
    weights = (DEFAULT_DIR / "model.safetensors").stat().st_size
    assert hub.bytes_served(UNCATALOGUED, "model.safetensors") >= weights  # downloaded, not a local path
    answer = stack.chat(stack.serve_url("ws-uncatalogued"), "What is Kubernetes?", max_new_tokens=8)
    assert isinstance(answer["Result"], str) and answer["Result"].strip(), answer
    stack.kubectl("delete", "workspace", "ws-uncatalogued", "--wait=false")


def test_apply_workspace_chat_and_delete(tmp_path: Path) -> None:
    sample = yaml.safe_load(SAMPLE.read_text())
    name, ns = sample["metadata"]["name"], sample["metadata"].get("namespace", "default")
    hub = FakeHub().start()
    hub.add_repo(UNCATALOGUED, ensure_tiny_model(DEFAULT_DIR))
    stack = LocalStack(tmp_path, fake_node_delay=0.5, log=print, hf_endpoint=hub.url)
    try:
        stack.start()
        stack.kubectl("apply", "-f", str(SAMPLE))

        ws = stack.wait_workspace(name, ns, timeout=600)
        conds = {c["type"]: c["status"] for c in ws["status"]["conditions"]}
        assert conds["ResourceReady"] == conds["InferenceReady"] == conds["WorkspaceReady"] == "True"
        # what a Kaito v0.12 script waits on: it returns for an inference workspace too
        waited = stack.kubectl("wait", "--for=condition=WorkspaceSucceeded", f"workspace/{name}", "-n", ns,
                               "--timeout=60s")
        assert "condition met" in waited, waited
        table = stack.kubectl("get", "workspace", name, "-n", ns)
        assert "True" in table.splitlines()[1], table

        # the stack installs Karpenter's NodeClaim CRD, so --node-api=auto picks NodeClaims
        machines = stack.get_json("nodeclaims", "-l", f"kaito.sh/workspace={name}")["items"]
        assert len(machines) == ws["status"]["targetNodeCount"] >= 1
        assert not stack.get_json("machines")["items"]
        nodes = stack.get_json("nodes")["items"]
        provider_ids = {m["status"]["providerID"] for m in machines}
        assert provider_ids <= {n["spec"].get("providerID") for n in nodes}

        apps = stack.serve_applications()  # what the Ray dashboard's Serve tab shows
        assert any(name in app and info.get("status") == "RUNNING" for app, info in apps.items()), apps

        answer = stack.chat(stack.serve_url(name, ns), "What is Kubernetes?", max_new_tokens=8)
        assert isinstance(answer["Result"], str) and answer["Result"].strip(), answer

        # the cold start, phase by phase, in the status (kubectl get -o yaml shows it) and as histograms
        ws = stack.wait_timeline(name, ns, timeout=120)
        phases = ws["status"]["timeline"]
        assert [p["phase"] for p in phases] == list(INFERENCE_PHASES), phases
        assert all(p["seconds"] >= 0 and p["endedAt"] for p in phases), phases
        assert "FirstRequestAnswered" in stack.kubectl("get", "workspace", name, "-n", ns, "-o", "yaml")
        print("\n" + phase_table(ws))
        observed = _wait(lambda: stack.promql('kaito_workspace_phase_seconds_count{phase="WeightsLoaded"}'),
                         60, "the phase histogram in Prometheus")
        assert float(observed[0]["value"][1]) >= 1, observed

        # scrapes lag the status by up to an interval: the stack waits for the series to read 1
        ready = stack.readiness_series(name, ns, timeout=60)
        assert ready == {"ResourceReady": "1", "InferenceReady": "1", "WorkspaceReady": "1",
                         "WorkspaceSucceeded": "1"}, ready

        _uncatalogued_model_goes_ready_and_answers(stack, hub, tmp_path)

        stack.kubectl("delete", "workspace", name, "-n", ns, "--wait=false")
        _wait(lambda: not stack.get_json("workspace", "-n", ns)["items"], 180, "workspace to be gone")
        _wait(lambda: not stack.get_json("nodeclaims")["items"], 120, "nodeclaims to be gone")
        _wait(lambda: not [n for n in stack.get_json("nodes")["items"]
                           if n["metadata"].get("labels", {}).get("kaito.sh/workspace") == name],
              120, "nodes to be gone")
        # ownerReference GC (kube-controller-manager) removes the RayService and Service
        _wait(lambda: not stack.get_json("rayservices", "-n", ns)["items"], 120, "rayservice to be gone")
        _wait(lambda: not stack.get_json("services", "-n", ns, "-l", f"kaito.sh/workspace={name}")["items"],
              120, "service to be gone")
        _wait(lambda: not stack.serve_applications(), 120, "the Ray Serve app to be torn down")
        print("\n" + stack.timeline.table())
    finally:
        stack.stop()
        hub.stop()
