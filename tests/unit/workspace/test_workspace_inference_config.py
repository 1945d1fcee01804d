"""``inference.config``: checked before any Machine, then in the serve config."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from test_workspace_reconciler import WORKSPACE

from controller.api.kinds import WORKSPACES
from controller.api.workspace import LABEL_WORKSPACE, Workspace
from controller.runtime import Request, Store
from controller.runtime.fake import FakeClient
from controller.runtime.kinds import CONFIGMAPS
from controller.workspace.plan import plan_for
from controller.workspace.reconciler import Options, Stores, WorkspaceReconciler
from controller.workspace.runtime_config import check_inference_config
from controller.workspace.serveconfig import build_serve_config

SAMPLES = Path(__file__).resolve().parents[3] / "config" / "samples"
CONFIGURED = {**WORKSPACE, "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}, "config": "params"}}


def _configmap(text: str | None, name: str = "params") -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns"},
            "data": {} if text is None else {"inference_config.yaml": text}}


def _pass(configmap: dict | None) -> tuple[FakeClient, Workspace]:
    client = FakeClient()
    client.add(WORKSPACES, copy.deepcopy(CONFIGURED))
    if configmap is not None:
        client.add(CONFIGMAPS, configmap)
    stores = Stores(Store(), Store(), Store(), Store(), Store())
    stores.machines.add_label_index(LABEL_WORKSPACE)
    stores.workspaces.add(copy.deepcopy(CONFIGURED))
    WorkspaceReconciler(client, stores, options=Options()).reconcile(Request("ns", "phi"))
    return client, Workspace.model_validate(client.objects[("workspaces", "ns", "phi")])


def _machines(client: FakeClient) -> list:
    return [k for k in client.objects if k[0] == "machines"]


def test_a_missing_configmap_is_waited_for_without_nodes() -> None:
    client, ws = _pass(None)
    cond = ws.condition("ResourceReady")
    assert (cond.status, cond.reason) == ("False", "InferenceConfigNotFound")
    assert "waiting for ConfigMap params (inference.config) with key inference_config.yaml" in cond.message
    assert ws.status.state == "Pending" and not _machines(client)


def test_an_invalid_configmap_fails_with_the_message_and_no_nodes() -> None:
    for cm, message in ((_configmap(None), "no key inference_config.yaml (its keys: none)"),
                        (_configmap("max_batch_szie: 8\n"), "max_batch_szie: unknown key"),
                        (_configmap("max_context: 999999\n"), "max_context 999999 exceeds the")):
        client, ws = _pass(cm)
        cond = ws.condition("ResourceReady")
        assert (cond.status, cond.reason) == ("False", "InvalidWorkspace"), cond
        assert message in cond.message and "ConfigMap params (inference.config)" in cond.message
        assert ws.condition("WorkspaceSucceeded").reason == "WorkspaceFailed"
        assert not _machines(client)


def test_a_valid_configmap_creates_the_machines_and_reaches_the_serve_config() -> None:
    client, ws = _pass(_configmap("max_batch_size: 4\nvllm:\n  max-model-len: 1024\n"))
    assert _machines(client) and ws.condition("ResourceReady").reason != "InvalidWorkspace"
    ws = Workspace.model_validate(CONFIGURED)
    cm = _configmap("max_batch_size: 4\nvllm:\n  max-model-len: 1024\n")
    plan, problem = check_inference_config(ws, cm, plan_for(ws))
    assert problem is None
    args = yaml.safe_load(build_serve_config(ws, plan))["applications"][0]["args"]
    assert args["engine"]["max_batch_size"] == 4 and args["model"]["max_context"] == 1024


def test_the_sample_passes_the_check() -> None:
    cm = yaml.safe_load((SAMPLES / "inference_config_phi_3.yaml").read_text())
    sample = SAMPLES / "workspace_phi_3_with_inference_config.yaml"
    ws = Workspace.from_k8s(yaml.safe_load(sample.read_text()))
    assert ws.inference.config == cm["metadata"]["name"]
    plan, problem = check_inference_config(ws, cm, plan_for(ws))
    assert problem is None, problem
    args = yaml.safe_load(build_serve_config(ws, plan))["applications"][0]["args"]
    assert (args["engine"]["max_batch_size"], args["model"]["max_context"], args["model"]["dtype"]) == (
        8, 2048, "float16")
    # what has no effect here is said where the estimate is explained (ResourceReady's message)
    assert plan.message.endswith("inference.config: no effect here: kv_cache_cpu_memory_utilization, "
                                 "vllm.gpu-memory-utilization.")


def test_kaitos_custom_config_example_applies() -> None:
    """examples/inference/kaito_workspace_custom_config.yaml's ConfigMap (Kaito v0.12)."""
    text = ("max_probe_steps: 6\nvllm:\n  cpu-offload-gb: 0\n  gpu-memory-utilization: 0.95\n"
            "  swap-space: 4\n  max-model-len: 131072\n  tensor-parallel-size: 2\n"
            "  max-seq-len-to-capture: 8192\n  num-scheduler-steps: 1\n  enable-chunked-prefill: true\n")
    ws = Workspace.from_k8s(yaml.safe_load((SAMPLES / "workspace_phi_4_mini_hf_id.yaml").read_text()))
    ws.inference.config = "ds"
    plan, problem = check_inference_config(ws, _configmap(text, "ds"), plan_for(ws))
    assert problem is None, problem
    assert plan.runtime.max_context == 131072


def test_a_hugging_face_id_is_served_under_that_name() -> None:
    ws = Workspace.from_k8s(yaml.safe_load((SAMPLES / "workspace_phi_4_mini_hf_id.yaml").read_text()))
    plan = plan_for(ws)
    assert plan.preset == "phi-4-mini-instruct" and plan.model == "microsoft/Phi-4-mini-instruct"
    args = yaml.safe_load(build_serve_config(ws, plan))["applications"][0]["args"]
    assert args["model"]["name"] == "microsoft/Phi-4-mini-instruct"
