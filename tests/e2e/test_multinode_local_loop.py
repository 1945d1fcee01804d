"""The seed's GPU (Standard_NC6s_v3, one 16 GiB V100) cannot hold Phi-3-medium: the estimator plans
it as two pipeline stages on two nodes. This runs that Workspace through the whole local loop and
checks the stages sit on two Ray nodes, one per Kubernetes node, and answer as ``generate`` does.

Why here and not only in tests/integration/workspace/test_workspace_standin_multinode_it.py: that
test tells the planner to split a model that fits one node, in-process; this one is a user's
manifest, unchanged, planned by the catalog's own numbers, with every piece a real process (the
chart-installed controller and provisioner, the fake cloud's two Nodes, the KubeRay stand-in
starting one ``ray start --address`` node per worker Pod, the replica downloading the model's id
from the local hub). The stand-in checkpoint is the Phi-3 proof's tiny config served under
``microsoft/Phi-3-medium-4k-instruct``; the head declares no GPU, so a stage can only be placed on
a worker node, as on a real cluster where the head pod has no GPU.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from hack.fake_hf_hub import FakeHub
from hack.kuberay_standin import ray_auth
from hack.kuberay_standin.workerpods import LABEL_K8S_NODE, LABEL_POD
from hack.localstack import LocalStack
from presets.registry import default_catalog
from tests.e2e.standin_checkpoints import greedy_text, standin_checkpoint
from tests.e2e.test_architectures_local_loop import RUNTIME_CONFIG, runtime_config
from tests.ray_state import stage_placement

pytestmark = pytest.mark.e2e

MODEL, SKU, NAME = "microsoft/Phi-3-medium-4k-instruct", "Standard_NC6s_v3", "phi-3-medium"
PROMPT, MAX_NEW_TOKENS = "What is Kubernetes?", 12


def manifest() -> dict:
    return {
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": NAME},
        "resource": {"instanceType": SKU, "labelSelector": {"matchLabels": {"apps": NAME}}},
        "inference": {"preset": {"name": MODEL}, "config": RUNTIME_CONFIG},
    }


def test_a_two_node_workspace_serves_from_stages_on_two_ray_nodes(tmp_path: Path) -> None:
    checkpoint = standin_checkpoint("Phi3ForCausalLM")
    expected, generated = greedy_text(checkpoint, PROMPT, MAX_NEW_TOKENS)
    assert generated > 0
    hub = FakeHub().start()
    hub.add_repo(MODEL, checkpoint, commit=default_catalog().preset(MODEL).model_revision)  # the pin
    # no GPU on the head: only the worker nodes (one per worker Pod, each with its Pod's GPU) fit a stage
    stack = LocalStack(tmp_path, fake_node_delay=0.5, log=print, hf_endpoint=hub.url, ray_gpus=0)
    try:
        stack.start()
        files = tmp_path / "workspace.yaml"
        files.write_text(yaml.safe_dump_all([runtime_config(), manifest()]))
        applied = time.monotonic()
        stack.kubectl("apply", "-f", str(files))
        ws = stack.wait_workspace(NAME, timeout=420)
        print(f"{NAME} Ready {time.monotonic() - applied:.0f} s after the apply")

        claims = stack.get_json("nodeclaims", "-l", f"kaito.sh/workspace={NAME}")["items"]
        assert ws["status"]["targetNodeCount"] == len(claims) == 2, claims
        app = yaml.safe_load(stack.get_json("rayservice", NAME)["spec"]["serveConfigV2"])["applications"][0]
        assert app["args"]["parallel"]["workers"] == 2, app["args"]["parallel"]  # two pipeline stages
        k8s_nodes = set(ws["status"]["workerNodes"])
        assert len(k8s_nodes) == 2, ws["status"]

        placed = list(stage_placement(stack.dashboard_url, ray_auth.headers(stack.ray_auth_token)).values())
        assert len(placed) == 2, placed
        assert {labels.get(LABEL_K8S_NODE) for labels in placed} == k8s_nodes, placed
        assert len({labels.get(LABEL_POD) for labels in placed} - {None}) == 2, placed

        answer = stack.chat(stack.serve_url(NAME), PROMPT, MAX_NEW_TOKENS, do_sample=False)
        assert answer["Result"] == PROMPT + expected, (answer, expected)
        assert hub.bytes_served(MODEL, "model.safetensors") > 0
    finally:
        stack.stop()
        hub.stop()
