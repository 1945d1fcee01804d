"""The tuning side of a workspace: a batch/v1 Job that runs ``python -m rayserve.tuning``.

A tuning workspace fine-tunes a preset with LoRA or QLoRA on one node and writes the adapter to
its output; there is no serving endpoint. The Job is owned by the Workspace (garbage-collected
with it) and pinned to the workspace's node like the inference pods.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.api.workspace import Workspace
from controller.workspace import names
from controller.workspace.inference import GPU_RESOURCE, pod_labels, pod_pinning
from controller.workspace.plan import Plan

INPUT_DIR = "/mnt/data"
OUTPUT_DIR = "/mnt/results"
DATASET_FILE = "dataset.jsonl"


def _mounts(ws: Workspace) -> tuple[list[str], list[dict], list[dict], list[dict]]:
    """(args, volumes, volumeMounts, initContainers) for the dataset and the adapter output.

    ``rayserve.tuning`` reads one OpenAI-chat JSONL (``--data``: a URL or a path) and writes the
    adapter to ``--output``. URL inputs are downloaded by the trainer itself; image, volume and
    node-path inputs are mounted at /mnt/data and the dataset is ``/mnt/data/DATASET_FILE``.
    """
    assert ws.tuning is not None
    args: list[str] = []
    volumes: list[dict] = []
    mounts: list[dict] = []
    inits: list[dict] = []
    src, dst = ws.tuning.input, ws.tuning.output
    if src.urls:
        args += ["--data", src.urls[0]]
    else:
        args += ["--data", f"{INPUT_DIR}/{DATASET_FILE}"]
        if src.volume_source:
            volumes.append({"name": "input", **src.volume_source})
        elif src.path:
            volumes.append({"name": "input", "hostPath": {"path": src.path, "type": "Directory"}})
        else:  # image: copy its /data out, as Kaito's data puller does
            volumes.append({"name": "input", "emptyDir": {}})
            inits.append({"name": "input-puller", "image": src.image,
                          "command": ["sh", "-c", f"cp -r /data/. {INPUT_DIR}/"],
                          "volumeMounts": [{"name": "input", "mountPath": INPUT_DIR}]})
        mounts.append({"name": "input", "mountPath": INPUT_DIR, "readOnly": not src.image})
    args += ["--output", OUTPUT_DIR]
    if dst.volume_source:
        volumes.append({"name": "output", **dst.volume_source})
    elif dst.path:
        volumes.append({"name": "output", "hostPath": {"path": dst.path, "type": "DirectoryOrCreate"}})
    else:  # an image destination: the adapter stays in the pod until a pusher exists (see report)
        volumes.append({"name": "output", "emptyDir": {}})
    mounts.append({"name": "output", "mountPath": OUTPUT_DIR})
    return args, volumes, mounts, inits


def build_tuning_job(ws: Workspace, plan: Plan, image: str, model: str) -> dict:
    """The Job: one pod on the workspace's node holding all its GPUs; ``model`` is the base model's
    directory or hub id (the preset's model source)."""
    assert ws.tuning is not None
    args, volumes, mounts, inits = _mounts(ws)
    container: dict = {
        "name": "tuning",
        "image": image,
        "command": ["python", "-m", "rayserve.tuning"],
        "args": ["--model", model, "--method", ws.tuning.method, *args],
        "volumeMounts": mounts,
    }
    if plan.gpus_per_node:
        container["resources"] = {"limits": {GPU_RESOURCE: str(plan.gpus_per_node)}}
    env: list[dict] = []
    opts = ws.tuning.preset.preset_options
    if opts and opts.model_access_secret:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": opts.model_access_secret, "key": "HF_TOKEN", "optional": True}}})
    if ws.tuning.output.image_push_secret:
        env.append({"name": "OUTPUT_PUSH_SECRET", "value": ws.tuning.output.image_push_secret})
    if env:
        container["env"] = env
    spec: dict = {**pod_pinning(ws), "restartPolicy": "Never", "containers": [container], "volumes": volumes}
    if inits:
        spec["initContainers"] = inits
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
            "template": {"metadata": {"labels": pod_labels(ws)}, "spec": spec},
        },
    }


@dataclass(frozen=True)
class JobState:
    """JobStarted / WorkspaceSucceeded as read from the Job's status."""

    started: bool
    succeeded: bool
    failed: bool
    message: str


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
