"""The main job, end to end: kubectl apply a Workspace, get a /chat answer, delete it cleanly.

Every piece is a real process (kube-apiserver + etcd, controller with its webhook, provisioner
over the fake GPU cloud, the KubeRay stand-in with a local Ray head, Prometheus), driven by
the same LocalStack the README's demo uses. One test walks the whole loop in order, because
each step needs the previous one and the stack costs ~a minute to start. On the way, an
uncatalogued model from the local hub has its serve replica killed (it reloads from the cache, not
the hub, and the timeline shows the reload), and the controller is restarted with the hub down.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from controller.api.workspace import INFERENCE_PHASES
from hack.fake_hf_hub import FakeHub, HubRepo
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


def _replica_pids(stack: LocalStack, name: str) -> set[int]:
    """The OS processes of the workspace's Serve replicas, as Serve reports them (dashboard REST)."""
    apps = {a: info for a, info in stack.serve_applications().items() if a.startswith(f"default.{name}.")}
    return {int(r["pid"]) for info in apps.values() for d in (info.get("deployments") or {}).values()
            for r in d.get("replicas") or [] if r.get("pid") and r.get("state") == "RUNNING"}


def _a_killed_replica_reloads_from_the_cache(stack: LocalStack, hub: FakeHub, repo: HubRepo) -> None:
    """Issue 12 item 5: the serve replica is killed (SIGKILL, as an OOM kill or a container restart
    ends it); Serve starts another, which loads the pinned commit from the node's cache: no byte
    comes from the hub again, and the timeline shows the first load and the reload."""
    name = "ws-uncatalogued"
    ws = stack.wait_timeline(name, "default", timeout=120)
    kept = ws["status"]["resolvedModel"]
    assert (kept["name"], kept["revision"]) == (UNCATALOGUED, repo.sha), kept
    assert f"revision: {repo.sha}" in stack.get_json("rayservice", name)["spec"]["serveConfigV2"]
    served, asked = hub.bytes_served(UNCATALOGUED), len(hub.requests)
    weights = (DEFAULT_DIR / "model.safetensors").stat().st_size
    # the first load downloaded the weights once (beside the controller's range read of the header)
    assert weights <= hub.bytes_served(UNCATALOGUED, "model.safetensors") < 2 * weights
    pids = _wait(lambda: _replica_pids(stack, name), 60, "the replica's pid")
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    ws = _wait(lambda: (w := stack.get_json("workspace", name)) and any(
        p["phase"] == "WeightsReloaded" for p in w["status"]["timeline"]) and w, 300, "WeightsReloaded")
    print(f"replica killed -> WeightsReloaded in the status after {time.monotonic() - started:.1f}s; "
          f"hub requests since: {len(hub.requests) - asked}")
    assert hub.bytes_served(UNCATALOGUED) == served  # the cache on the node's volume, nothing downloaded
    # the pinned commit is trusted from the cache: not even a HEAD of a file (present or absent)
    assert not [r for r in hub.requests[asked:] if "/resolve/" in r[1]], hub.requests[asked:]
    assert not _replica_pids(stack, name) & pids
    phases = {p["phase"]: p for p in ws["status"]["timeline"]}
    assert phases["WeightsLoaded"]["seconds"] >= 0 and phases["ServingInterrupted"]["count"] == 1
    assert phases["WeightsReloaded"]["count"] == 1 and phases["WeightsReloaded"]["seconds"] >= 0
    print("\n" + phase_table(ws))
    answer = stack.chat(stack.serve_url(name), "What is Kubernetes?", max_new_tokens=8)
    assert isinstance(answer["Result"], str) and answer["Result"].strip(), answer


def _reconciles(stack: LocalStack) -> float:
    url = f"http://127.0.0.1:{stack.ports['controller-metrics']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        lines = resp.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines
               if line.startswith("controller_runtime_reconcile_total{") and 'controller="workspace"' in line)


def _a_controller_restarted_with_the_hub_down_keeps_it_ready(stack: LocalStack, hub: FakeHub) -> None:
    """What was resolved is in status.resolvedModel: a fresh controller plans from it, no hub read."""
    hub.stop()
    stack.procs["controller"].stop()
    stack.start_controller()
    _wait(lambda: _reconciles(stack) >= 2, 60, "the restarted controller's first pass of each workspace")
    ws = stack.get_json("workspace", "ws-uncatalogued")
    conds = {c["type"]: (c["status"], c["reason"]) for c in ws["status"]["conditions"]}
    assert conds["ResourceReady"] == ("True", "MachinesReady"), conds
    assert conds["WorkspaceReady"] == ("True", "WorkspaceReady") and ws["status"]["state"] == "Ready", conds


def test_apply_workspace_chat_and_delete(tmp_path: Path) -> None:
    sample = yaml.safe_load(SAMPLE.read_text())
    name, ns = sample["metadata"]["name"], sample["metadata"].get("namespace", "default")
    hub = FakeHub().start()
    repo = hub.add_repo(UNCATALOGUED, ensure_tiny_model(DEFAULT_DIR))
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
        _a_killed_replica_reloads_from_the_cache(stack, hub, repo)
        _a_controller_restarted_with_the_hub_down_keeps_it_ready(stack, hub)
        stack.kubectl("delete", "workspace", "ws-uncatalogued", "--wait=false")

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
