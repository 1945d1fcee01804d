"""The tuning side of a workspace: a batch/v1 Job that runs ``python -m rayserve.tuning``.

A tuning workspace fine-tunes a preset with LoRA or QLoRA on one node and writes the adapter to
its output; there is no serving endpoint. The Job is owned by the Workspace (garbage-collected
with it) and pinned to the workspace's node like the inference pods.

``tuning.config`` names a ConfigMap with Kaito's ``training_config.yaml``. The controller checks it
(``check_training_config``) with the trainer's own parser (``rayserve.tuning.config``) before it
creates the Job, so a typo is a Workspace condition a person sees at once rather than a failed pod
to dig out of logs; the Job then mounts the ConfigMap and passes ``--config``.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from controller.api.workspace import Workspace
from controller.workspace import names
from controller.workspace.adapter_push import pusher_container, record_exit_code
from controller.workspace.inference import GPU_RESOURCE, pod_labels, pod_pinning, pull_secrets
from controller.workspace.plan import Plan
from controller.workspace.podsecurity import restricted_pod
from controller.workspace.volumes import PodData
from rayserve.tuning.config import (
    CONFIG_KEY,
    JOB_DEADLINE_SECONDS,
    TrainingConfigError,
    parse_training_config,
)

INPUT_DIR = "/mnt/data"
OUTPUT_DIR = "/mnt/results"
CONFIG_DIR = "/mnt/config"

# why the training config keeps the Job (and its Machines) back
REASON_CONFIG_NOT_FOUND = "TuningConfigNotFound"  # wait: the ConfigMap may be created later
REASON_CONFIG_INVALID = "TuningConfigInvalid"  # failed until the ConfigMap is fixed


def _mounts(ws: Workspace, output_dir: str) -> tuple[list[str], PodData]:
    """The trainer's data arguments, and the volumes, mounts and init containers behind them.

    ``rayserve.tuning`` reads OpenAI-chat rows (jsonl, json, parquet, arrow or csv; ``--data``,
    once per URL, path or directory) and writes the adapter to ``--output``. URL inputs (all of
    them, as Kaito's downloader fetches each) are downloaded by the trainer itself; image, volume
    and node-path inputs are mounted at /mnt/data (``volumes.PodData``, the adapters' mapping)
    and the trainer reads every dataset file there.
    """
    assert ws.tuning is not None
    data = PodData()
    src, dst = ws.tuning.input, ws.tuning.output
    args: list[str] = []
    if src.urls:
        for url in src.urls:
            args += ["--data", url]
    elif data.add_source(src, "input", INPUT_DIR, "input-puller", mark_copy=True):
        args += ["--data", INPUT_DIR]
    args += ["--output", output_dir]
    if ws.tuning.config:
        args += ["--config", f"{CONFIG_DIR}/{CONFIG_KEY}"]
        data.volumes.append({"name": "config", "configMap": {
            "name": ws.tuning.config, "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}]}})
        data.mounts.append({"name": "config", "mountPath": CONFIG_DIR, "readOnly": True})
    if dst.volume_source:
        data.volumes.append({**dst.volume_source, "name": "output"})
    elif dst.path:
        data.volumes.append({"name": "output", "hostPath": {"path": dst.path, "type": "DirectoryOrCreate"}})
    else:  # an image destination: the pusher container publishes it (controller.workspace.adapter_push)
        data.volumes.append({"name": "output", "emptyDir": {}})
    data.mounts.append({"name": "output", "mountPath": OUTPUT_DIR})
    return args, data


def build_tuning_job(ws: Workspace, plan: Plan, image: str, output_dir: str = OUTPUT_DIR,
                     deadline_seconds: int = JOB_DEADLINE_SECONDS) -> dict:
    """The Job: one pod on the workspace's node holding all its GPUs, tuning ``plan.model`` (the
    base model's directory or hub id); ``output_dir`` and ``deadline_seconds`` as
    ``check_training_config`` found them (the output volume or a directory under it; the
    config's ``max_runtime_seconds``).

    The pod downloads and parses data from the internet, so it gets nothing it does not need: no
    service account token (it never calls the API), and ``podsecurity.restricted_pod``'s
    non-root, no-capabilities defaults. ``activeDeadlineSeconds`` ends a run that hangs or loops,
    so a GPU node is never billed for it forever."""
    assert ws.tuning is not None
    args, data = _mounts(ws, output_dir)
    volumes, mounts, inits = data.volumes, data.mounts, data.inits
    container: dict = {
        "name": "tuning",
        "image": image,
        "command": ["python", "-m", "rayserve.tuning"],
        "args": ["--model", plan.model, *(["--revision", plan.model_revision] if plan.model_revision else []),
                 "--method", ws.tuning.method, *args],
        "volumeMounts": mounts,
    }
    if plan.gpus_per_node:
        container["resources"] = {"limits": {GPU_RESOURCE: str(plan.gpus_per_node)}}
    env: list[dict] = []
    opts = ws.tuning.preset.preset_options
    if opts and opts.model_access_secret:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": opts.model_access_secret, "key": "HF_TOKEN", "optional": True}}})
    if env:
        container["env"] = env
    containers = [container]
    dst = ws.tuning.output
    if dst.image:  # the webhook requires imagePushSecret with it
        pusher, auth = pusher_container(dst.image, output_dir, dst.image_push_secret or "")
        containers = [record_exit_code(container), pusher]
        volumes = [*volumes, auth]
    spec: dict = {**pod_pinning(ws), "restartPolicy": "Never", "automountServiceAccountToken": False,
                  "containers": containers, "volumes": volumes}
    if inits:
        spec["initContainers"] = inits
    pull = pull_secrets([ws.tuning.input])
    if pull:  # the input image's registry (its puller is an init container)
        spec["imagePullSecrets"] = pull
    spec = restricted_pod(spec)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": names.tuning_job_name(ws.name),
            "namespace": ws.namespace,
            "labels": pod_labels(ws),
            "ownerReferences": [ws.owner_reference().to_k8s()],
        },
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": deadline_seconds,
            "template": {"metadata": {"labels": pod_labels(ws)}, "spec": spec},
        },
    }


@dataclass(frozen=True)
class JobState:
    """JobStarted / WorkspaceSucceeded as read from the Job's status (or, in ``ConfigCheck.problem``,
    why there is no Job yet: ``reason`` is then REASON_CONFIG_NOT_FOUND or REASON_CONFIG_INVALID)."""

    started: bool
    succeeded: bool
    failed: bool
    message: str
    reason: str = ""


@dataclass(frozen=True)
class ConfigCheck:
    """``tuning.config`` checked: the Job's ``--output``, or the problem that keeps the Job back."""

    output_dir: str = OUTPUT_DIR
    problem: JobState | None = None
    deadline_seconds: int = JOB_DEADLINE_SECONDS


def _invalid(name: str, message: str) -> ConfigCheck:
    return ConfigCheck(problem=JobState(False, False, True, f"ConfigMap {name} (tuning.config): {message}",
                                        REASON_CONFIG_INVALID))


def _output_dir(value: str | None) -> str | None:
    """TrainingArguments.output_dir when it lies in the output volume, else None (Kaito's rule is
    "under /mnt"; ours is narrower because only /mnt/results outlives the pod)."""
    if value is None:
        return OUTPUT_DIR
    path = posixpath.normpath(value)
    return path if path == OUTPUT_DIR or path.startswith(OUTPUT_DIR + "/") else None


def check_training_config(ws: Workspace, configmap: dict | None) -> ConfigCheck:
    """Whether the Job can be built from ``configmap`` (None: not found), as Kaito's webhook checks
    it: the key is there, the YAML validates, the method matches QuantizationConfig, and the output
    directory is one the Job keeps."""
    assert ws.tuning is not None and ws.tuning.config
    name = ws.tuning.config
    if configmap is None:
        return ConfigCheck(problem=JobState(
            False, False, False, f"waiting for ConfigMap {name} (tuning.config) with key {CONFIG_KEY}: "
            f"not found in namespace {ws.namespace}", REASON_CONFIG_NOT_FOUND))
    data = configmap.get("data") or {}
    if CONFIG_KEY not in data:
        keys = ", ".join(sorted(data)) or "none"
        return _invalid(name, f"no key {CONFIG_KEY} (its keys: {keys})")
    try:
        parsed = parse_training_config(data[CONFIG_KEY])
    except TrainingConfigError as exc:
        return _invalid(name, f"{CONFIG_KEY}: {exc}")
    problem = parsed.method_problem(ws.tuning.method)
    if problem:
        return _invalid(name, f"{CONFIG_KEY}: {problem}")
    output = _output_dir(parsed.training.output_dir)
    if output is None:
        return _invalid(name, f"{CONFIG_KEY}: TrainingArguments.output_dir {parsed.training.output_dir!r} "
                              f"must be {OUTPUT_DIR} or a directory under it (the output volume)")
    return ConfigCheck(output_dir=output, deadline_seconds=parsed.job_deadline_seconds)


def job_state(job: dict | None) -> JobState:
    if job is None:
        return JobState(False, False, False, "waiting for the tuning Job to be created")
    name = (job.get("metadata") or {}).get("name", "")
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return JobState(True, True, False, f"tuning Job {name} completed")
        if cond.get("type") == "Failed":
            detail = cond.get("message") or cond.get("reason") or "failed"
            return JobState(True, False, True, f"tuning Job {name} failed: {detail}")
    if status.get("succeeded"):
        return JobState(True, True, False, f"tuning Job {name} completed")
    if status.get("active") or status.get("ready") or status.get("startTime"):
        active = status.get("active", 0)
        return JobState(True, False, False, f"tuning Job {name} is running ({active} active)")
    return JobState(False, False, False, f"tuning Job {name} is pending")
