"""Where the serve containers keep downloaded weights: a volume on the node, not the container.

Why: a hub model is downloaded into the Hugging Face cache (``$HF_HOME``), which by default lives
in the container's own filesystem, so a restarted serve container (OOM, a dead stage, a liveness
kill) downloads every byte again: minutes for a 7B model, most of a 70B cold start. The cache is
put on a volume instead, which outlives container restarts:

- on SKUs with local NVMe (``nvme: true`` in presets/gpu_skus.yaml: the A100/H100 families, whose
  local disk Azure mounts at /mnt), a hostPath directory on it, so even a recreated pod on the same
  node finds the weights, read at NVMe speed;
- elsewhere an ``emptyDir`` (the node's disk, kept for the pod's life), sized to the preset's disk
  budget so a runaway cache evicts the pod rather than filling the node.

The path is fixed by the controller, never taken from the Workspace (authors cannot mount host
paths, controller/api/validation.py), and the nodes are the workspace's own (tainted, labelled), so
no other workload shares the directory.
"""

from __future__ import annotations

from controller.workspace.plan import Plan

VOLUME = "model-cache"
MOUNT_PATH = "/mnt/model-cache"
NVME_HOST_PATH = "/mnt/kaito/model-cache"  # on the local NVMe/temp disk Azure mounts at /mnt


def volume(plan: Plan) -> dict:
    if plan.local_nvme:
        return {"name": VOLUME, "hostPath": {"path": NVME_HOST_PATH, "type": "DirectoryOrCreate"}}
    empty: dict = {"sizeLimit": f"{plan.disk_gib}Gi"} if plan.disk_gib else {}
    return {"name": VOLUME, "emptyDir": empty}


def mount() -> dict:
    return {"name": VOLUME, "mountPath": MOUNT_PATH}


def env() -> list[dict]:
    """huggingface_hub and transformers keep their cache under ``$HF_HOME``."""
    return [{"name": "HF_HOME", "value": MOUNT_PATH}]
