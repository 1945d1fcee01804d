"""A 2-node Workspace on the stand-in's Ray cluster: one Ray worker node per worker Pod, one stage
on each, a node lost and recovered.

The whole path runs for real: the controller (in-process) plans the tiny model as two pipeline
stages on two fake-GPU nodes (the catalog's tiny-phi-3 fits one node, so the planner is told to
split it, as a model twice the fake GPU's memory would be), the provisioner's fake cloud registers
the Nodes, the stand-in starts a Ray head plus one ``ray start --address`` node per worker Pod
(labelled with its Kubernetes node) and runs the serve config; the stage actors load their halves
of the checkpoint from disk and activations cross between the two Ray nodes. Then one worker node's
process group is killed (its raylet and the stage on it), as a GPU node dying would: the Workspace
must say so, the stand-in restarts the node (KubeRay recreates the Pod), Serve re-places the
replica, and the Workspace is Ready and answers the same again.

One test, in order, because each step needs the previous one and the cluster costs ~20 s to start
on a 2-core machine.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from ws_it_helpers import (
    conditions,
    make_namespace,
    running_controller,
    running_provisioner,
    wait_for,
    workspace_manifest,
)

from controller.api.kinds import RAYSERVICES, WORKSPACES
from controller.api.workspace import Workspace
from controller.runtime import Client, RestClient
from controller.workspace import names
from controller.workspace.plan import Plan, plan_for
from hack.kuberay_standin.controller import serve_endpoint
from hack.kuberay_standin.ray_head import RayHead
from hack.kuberay_standin.standin import Standin
from hack.kuberay_standin.workerpods import LABEL_K8S_NODE, LABEL_POD
from tests import ray_state

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
PROMPTS = [("the model is a very fast gpu cluster node", 12), ("kaito workspace", 9)]


def two_stages(ws: Workspace) -> Plan:
    """The catalog's plan of the tiny model on the fake SKU, split into 2 stages on 2 nodes."""
    plan = plan_for(ws)
    return replace(plan, node_count=2, pipeline_parallel=2, message=f"{plan.message} (test: 2 stages)")


def reference(model_path: Path) -> list[str]:
    """The unsharded model's greedy continuations, in this process (real transformers)."""
    from rayserve.loading import load_model, load_tokenizer
    from rayserve.spec import ModelSpec

    spec = ModelSpec(name="tiny-phi-3", path=str(model_path))
    model, tok = load_model(spec), load_tokenizer(spec)
    out = []
    for prompt, n in PROMPTS:
        ids = tok(prompt, return_tensors="pt").input_ids
        gen = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None)
        out.append(tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True))
    return out


def completions(url: str) -> list[str]:
    texts = []
    for prompt, n in PROMPTS:
        body = {"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True}
        resp = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
        assert resp.status_code == 200, resp.text
        texts.append(resp.json()["choices"][0]["text"])
    return texts


def stage_placement(head: RayHead) -> dict[str, dict[str, str]]:
    return ray_state.stage_placement(head.dashboard_url, head.auth_headers)


def inference(client: Client, ns: str, name: str) -> dict:
    return conditions(client, ns, name).get("InferenceReady") or {}


def ready(client: Client, ns: str, name: str) -> bool:
    return (conditions(client, ns, name).get("WorkspaceReady") or {}).get("status") == "True"


def test_two_node_workspace_stages_on_two_ray_nodes_survive_a_lost_node(
    ws_client: Client, ws_ns: str, kubeconfig: str, tmp_path: Path
) -> None:
    from hack.tiny_model import ensure_tiny_model

    client, ns, name = ws_client, ws_ns, "pp2"
    expected = reference(ensure_tiny_model())
    inventory = make_namespace(client)
    head = RayHead(
        num_cpus=2,
        python_path=[str(REPO)],
        temp_dir=str(tmp_path / "ray"),
        log_path=tmp_path / "ray-head.log",
    )
    standin_client = RestClient.from_kubeconfig(kubeconfig)
    standin = Standin(standin_client, head, namespace=ns, poll_interval=1.0)
    with running_provisioner(kubeconfig, inventory), running_controller(kubeconfig, planner=two_stages):
        standin.start()
        try:
            t0 = time.monotonic()
            manifest = workspace_manifest(name, preset="tiny-phi-3", instance_type="Standard_Fake_GPU")
            client.create(WORKSPACES, manifest, ns)
            wait_for(
                lambda: ready(client, ns, name),
                300,
                f"Workspace Ready: {inference(client, ns, name)}",
                interval=0.5,
            )
            print(f"2-node Workspace Ready after {time.monotonic() - t0:.1f}s")
            ws = client.get(WORKSPACES, name, ns)
            k8s_nodes = set(ws["status"]["workerNodes"])
            assert len(k8s_nodes) == 2

            # --- one stage on each worker Ray node, each on its own Kubernetes node ------------------
            placed = stage_placement(head)
            assert len(placed) == 2, placed
            pods = {labels.get(LABEL_POD) for labels in placed.values()}
            assert len(pods) == 2 and None not in pods, placed  # worker nodes, not the head
            assert {labels.get(LABEL_K8S_NODE) for labels in placed.values()} == k8s_nodes, placed
            rs = client.get(RAYSERVICES, names.rayservice_name(name), ns)
            cluster = rs["status"]["activeServiceStatus"]["rayClusterStatus"]
            assert (cluster["desiredWorkerReplicas"], cluster["readyWorkerReplicas"]) == (2, 2), cluster

            url = serve_endpoint(rs)
            assert url
            assert completions(url) == expected

            # --- a worker node lost: its raylet, agents and the stage on it, as a dying GPU node -------
            victim = sorted(pods)[-1]
            pgid = standin.workers.process_group(victim) if standin.workers else None
            assert pgid is not None, victim
            t_kill = time.monotonic()
            os.killpg(pgid, signal.SIGKILL)
            failed = wait_for(
                lambda: (c := inference(client, ns, name)).get("status") == "False" and c,
                120,
                "InferenceReady=False after the node was killed",
                interval=0.25,
            )
            print(f"InferenceReady=False {time.monotonic() - t_kill:.1f}s after the kill: {failed}")
            message = failed["message"]
            assert "LLMServer" in message or "worker pods ready" in message, failed

            # --- recovered: the node restarted, the replica re-placed, the same answers ----------------
            wait_for(
                lambda: ready(client, ns, name),
                300,
                f"Workspace Ready again: {inference(client, ns, name)}",
                interval=0.5,
            )
            print(f"Ready again {time.monotonic() - t_kill:.1f}s after the kill")
            assert standin.workers is not None and standin.workers.nodes[victim].restarts >= 1
            placed = stage_placement(head)
            assert len({labels.get(LABEL_POD) for labels in placed.values()} - {None}) == 2, placed
            assert completions(url) == expected
        finally:
            standin.stop()
            standin_client.close()
            client.delete(WORKSPACES, name, ns)
