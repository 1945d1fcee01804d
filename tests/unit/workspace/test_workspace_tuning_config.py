"""tuning.config: the ConfigMap's training_config.yaml is checked before the Job is created, the Job
mounts it and passes --config, and what is wrong with it ends up in JobStarted."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from test_workspace_reconciler import WORKSPACE
from ws_unit_helpers import workspace

from controller.api.kinds import WORKSPACES
from controller.api.workspace import LABEL_WORKSPACE, Workspace
from controller.runtime import Request, Store
from controller.runtime.fake import Call, FakeClient
from controller.runtime.kinds import CONFIGMAPS
from controller.workspace import names
from controller.workspace.plan import Plan
from controller.workspace.reconciler import Options, Stores, WorkspaceReconciler
from controller.workspace.status import Observation, conditions_for
from controller.workspace.tuning import (
    REASON_CONFIG_INVALID,
    REASON_CONFIG_NOT_FOUND,
    build_tuning_job,
    check_training_config,
)
from rayserve.tuning.config import parse_training_config

PLAN = Plan(preset="phi-3-mini-4k-instruct", instance_type="Standard_NC24ads_A100_v4", node_count=1,
            gpus_per_node=1)
TUNING = {
    "preset": {"name": "phi-3-mini-4k-instruct"},
    "method": "qlora",
    "config": "train-cfg",
    "input": {"urls": ["https://example.com/data.jsonl"]},
    "output": {"volumeSource": {"emptyDir": {}}},
}
FOUR_BIT = "QuantizationConfig: {load_in_4bit: true}"
QLORA = """\
training_config:
  QuantizationConfig: {load_in_4bit: true}
  LoraConfig: {r: 4}
  TrainingArguments: {output_dir: /mnt/results/phi, max_steps: 10}
"""


def _cm(text: str | None = QLORA, **data: str) -> dict:
    if text is not None:
        data["training_config.yaml"] = text
    return {"metadata": {"name": "train-cfg", "namespace": "team-a"}, "data": data}


def _check(cm: dict | None, method: str = "qlora"):
    return check_training_config(workspace(tuning={**TUNING, "method": method}), cm)


def test_job_mounts_the_configmap_and_passes_config_and_its_output_dir() -> None:
    ws = workspace(tuning=TUNING)
    check = _check(_cm())
    assert check.problem is None and check.output_dir == "/mnt/results/phi"
    job = build_tuning_job(ws, PLAN, "img:1", check.output_dir)
    pod = job["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert c["args"][-4:] == ["--output", "/mnt/results/phi", "--config", "/mnt/config/training_config.yaml"]
    assert {"name": "config", "mountPath": "/mnt/config", "readOnly": True} in c["volumeMounts"]
    assert {"name": "config", "configMap": {"name": "train-cfg", "items": [
        {"key": "training_config.yaml", "path": "training_config.yaml"}]}} in pod["volumes"]
    # no config: no mount, no flag, the default output
    plain = build_tuning_job(workspace(tuning={**TUNING, "config": None}), PLAN, "img:1")
    [c] = plain["spec"]["template"]["spec"]["containers"]
    assert "--config" not in c["args"] and c["args"][-2:] == ["--output", "/mnt/results"]
    assert all(v["name"] != "config" for v in plain["spec"]["template"]["spec"]["volumes"])


def test_check_messages_name_the_configmap_and_the_key() -> None:
    missing = _check(None).problem
    assert missing is not None and missing.reason == REASON_CONFIG_NOT_FOUND and not missing.failed
    assert missing.message == (
        "waiting for ConfigMap train-cfg (tuning.config) with key training_config.yaml: "
        "not found in namespace team-a"
    )
    cases = {
        "no key training_config.yaml (its keys: other.yaml)": _cm(None, **{"other.yaml": "x"}),
        "LoraConfig.r: Input should be greater than or equal to 1 (got -1)": _cm("LoraConfig: {r: -1}"),
        "LoraConfig.lora_dropuot: unknown key; did you mean lora_dropout?":
            _cm("LoraConfig: {lora_dropuot: 1}"),
        "method qlora needs QuantizationConfig.load_in_4bit: true": _cm("LoraConfig: {r: 4}"),
        "TrainingArguments.output_dir '/tmp/out' must be /mnt/results or a directory under it":
            _cm(f"{FOUR_BIT}\nTrainingArguments: {{output_dir: /tmp/out}}"),
        "output_dir '/mnt/results/../etc' must be /mnt/results":
            _cm(f"{FOUR_BIT}\nTrainingArguments: {{output_dir: /mnt/results/../etc}}"),
    }
    for expected, cm in cases.items():
        problem = _check(cm).problem
        assert problem is not None and problem.reason == REASON_CONFIG_INVALID and problem.failed
        assert problem.message.startswith("ConfigMap train-cfg (tuning.config): ")
        assert expected in problem.message, problem.message
    lora = _check(_cm(FOUR_BIT), method="lora").problem
    assert lora is not None and "method lora, but QuantizationConfig.load_in_4bit is true" in lora.message
    assert _check(_cm(FOUR_BIT)).output_dir == "/mnt/results"


def test_conditions_missing_config_waits_invalid_config_fails() -> None:
    # the Machines are held back: ResourceReady says why, and JobStarted waits on it
    for problem, reason, state in [
        (_check(None).problem, REASON_CONFIG_NOT_FOUND, "Pending"),
        (_check(_cm("LoraConfig: {r: 0}")).problem, "InvalidWorkspace", "Failed"),
    ]:
        assert problem is not None
        obs = Observation(tuning=True)
        obs.hold_for(problem)
        conds, got = conditions_for(obs)
        by_type = {c.type: c for c in conds}
        assert got == state
        assert by_type["ResourceReady"].status == "False" and by_type["ResourceReady"].reason == reason
        assert by_type["JobStarted"].status == "False" and "train-cfg" in by_type["JobStarted"].message
        assert "train-cfg" in by_type["WorkspaceSucceeded"].message
        expected = "WorkspaceFailed" if state == "Failed" else "WorkspacePending"
        assert by_type["WorkspaceSucceeded"].reason == expected


# --- the reconciler ---------------------------------------------------------------------------------


def _put_cm(client: FakeClient, cm: dict) -> None:
    """The ConfigMap, as the API server holds it in the Workspace's namespace."""
    cm = copy.deepcopy(cm)
    cm["metadata"]["namespace"] = "ns"
    client.add(CONFIGMAPS, cm)


def _tuning_reconciler(
    configmaps: dict[str, dict] | None = None,
) -> tuple[WorkspaceReconciler, FakeClient, Stores]:
    client = FakeClient()
    for cm in (configmaps or {}).values():
        _put_cm(client, cm)
    stores = Stores(Store(), Store(), Store(), Store(), Store())
    stores.machines.add_label_index(LABEL_WORKSPACE)
    ws = copy.deepcopy(WORKSPACE)
    del ws["inference"]
    ws["resource"] = {"instanceType": PLAN.instance_type, "labelSelector": {"matchLabels": {"a": "b"}}}
    ws["tuning"] = TUNING
    client.add(WORKSPACES, ws)
    stores.workspaces.add(copy.deepcopy(client.objects[("workspaces", "ns", "phi")]))  # as stored
    rec = WorkspaceReconciler(client, stores, options=Options(), planner=lambda w: PLAN)
    rec.reconcile(Request("ns", "phi"))  # creates the Machine (when the config is there and valid)
    _machines_ready(client, stores)
    return rec, client, stores


def _machines_ready(client: FakeClient, stores: Stores) -> None:
    """Play the provisioner: every Machine created so far is Ready, as the informer would show."""
    for key in [k for k in client.objects if k[0] == "machines"]:
        m = copy.deepcopy(client.objects[key])
        ready = {"type": "Ready", "status": "True", "reason": "Ready", "message": "",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}
        m["status"] = {"nodeName": "n0", "conditions": [ready]}
        stores.machines.add(m)


def _job_started(workspace_body: dict) -> dict:
    return next(c for c in workspace_body["status"]["conditions"] if c["type"] == "JobStarted")


def test_reconciler_waits_for_the_configmap_then_creates_the_job() -> None:
    rec, client, stores = _tuning_reconciler()
    written: list[dict] = []
    client.update_status = lambda kind, obj: written.append(obj) or obj  # type: ignore[method-assign]

    result = rec.reconcile(Request("ns", "phi"))
    assert result.requeue_after == Options().config_poll_seconds  # look again, not an error backoff
    assert Call("get", "configmaps", "train-cfg", "ns") in client.calls
    assert not [k for k in client.objects if k[0] == "jobs"]
    # missing: waiting, and no GPU node idles meanwhile
    assert not [k for k in client.objects if k[0] == "machines"]
    resource = next(c for c in written[-1]["status"]["conditions"] if c["type"] == "ResourceReady")
    assert resource["reason"] == REASON_CONFIG_NOT_FOUND and "train-cfg" in resource["message"]
    assert "train-cfg" in _job_started(written[-1])["message"]
    assert written[-1]["status"]["state"] == "Pending"

    _put_cm(client, _cm("LoraConfig: {r: -1}"))
    assert rec.reconcile(Request("ns", "phi")).requeue_after == Options().config_poll_seconds
    # a ConfigMap that exists but cannot work is a spec problem, found before any Machine is made
    started = _job_started(written[-1])
    assert started["reason"] == "InvalidWorkspace" and "LoraConfig.r" in started["message"]
    resource = next(c for c in written[-1]["status"]["conditions"] if c["type"] == "ResourceReady")
    assert resource["reason"] == "InvalidWorkspace" and "train-cfg" in resource["message"]
    assert written[-1]["status"]["state"] == "Failed"
    assert not [k for k in client.objects if k[0] == "jobs"]

    _put_cm(client, _cm())
    stores.workspaces.add(copy.deepcopy(client.objects[("workspaces", "ns", "phi")]))  # caught up
    assert rec.reconcile(Request("ns", "phi")).requeue_after == Options().machine_poll_seconds
    stores.workspaces.add(client.objects[("workspaces", "ns", "phi")])  # with the launch record
    _machines_ready(client, stores)
    assert rec.reconcile(Request("ns", "phi")).requeue_after is None
    job = client.objects[("jobs", "ns", names.tuning_job_name("phi"))]
    [c] = job["spec"]["template"]["spec"]["containers"]
    assert c["args"][-2:] == ["--config", "/mnt/config/training_config.yaml"]

    # once the Job exists its config is settled: no more GETs of the ConfigMap
    stores.jobs.add(job)
    client.calls.clear()
    rec.reconcile(Request("ns", "phi"))
    assert Call("get", "configmaps", "train-cfg", "ns") not in client.calls


def test_an_invalid_config_provisions_no_gpu_node() -> None:
    _, client, _ = _tuning_reconciler({"train-cfg": _cm("LoraConfig: {lora_dropuot: 0.1}")})
    assert Call("get", "configmaps", "train-cfg", "ns") in client.calls
    assert not [k for k in client.objects if k[0] in ("machines", "jobs")]


def test_the_samples_training_config_passes_the_check() -> None:
    samples = Path(__file__).resolve().parents[3] / "config" / "samples"
    cm = yaml.safe_load((samples / "tuning_config_qlora_phi_3.yaml").read_text())
    ws = Workspace.from_k8s(yaml.safe_load((samples / "workspace_tuning_qlora_phi_3.yaml").read_text()))
    assert ws.tuning is not None and ws.tuning.config == cm["metadata"]["name"]
    check = check_training_config(ws, cm)
    assert check.problem is None and check.output_dir == "/mnt/results"
    assert parse_training_config(cm["data"]["training_config.yaml"]).overrides()["rank"] == 16


def test_the_tuning_pod_gets_no_token_no_root_no_capabilities() -> None:
    """It downloads and parses untrusted data: it must not hold the namespace's service account
    token (it never calls the API) nor run as root, and every container, the image puller and the
    pusher included, drops all capabilities."""
    tuning = {**TUNING, "config": None, "input": {"image": "reg/data:1"},
              "output": {"image": "reg/out:1", "imagePushSecret": "push"}}
    pod = build_tuning_job(workspace(tuning=tuning), PLAN, "img:1")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    sec = pod["securityContext"]
    assert sec["runAsNonRoot"] is True and sec["runAsUser"] == 1000
    assert sec["seccompProfile"] == {"type": "RuntimeDefault"}
    containers = pod["initContainers"] + pod["containers"]
    assert [c["name"] for c in containers] == ["input-puller", "tuning", "adapter-pusher"]
    for c in containers:
        assert c["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def test_the_job_has_a_deadline_from_the_tuning_config() -> None:
    """A run that hangs or loops ends: activeDeadlineSeconds is the config's max_runtime_seconds,
    a day without one."""
    plain = build_tuning_job(workspace(tuning={**TUNING, "config": None}), PLAN, "img:1")
    assert plain["spec"]["activeDeadlineSeconds"] == 24 * 3600
    text = QLORA.replace("max_steps: 10}", "max_steps: 10, max_runtime_seconds: 3600}")
    check = _check(_cm(text))
    assert check.problem is None and check.deadline_seconds == 3600
    job = build_tuning_job(workspace(tuning=TUNING), PLAN, "img:1", check.output_dir, check.deadline_seconds)
    assert job["spec"]["activeDeadlineSeconds"] == 3600
    assert "max_runtime_seconds" not in str(parse_training_config(text).overrides())  # not the trainer's
    bad = _check(_cm(QLORA.replace("max_steps: 10}", "max_steps: 10, max_runtime_seconds: 5}")))
    assert bad.problem is not None and bad.problem.reason == REASON_CONFIG_INVALID
    assert "max_runtime_seconds" in bad.problem.message
