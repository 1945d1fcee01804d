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

Who may write it: the Ray containers run as the image's ``ray`` user (``podsecurity``), but the
kubelet creates a ``DirectoryOrCreate`` hostPath as root, mode 0755, and ``fsGroup`` does not
apply to hostPath volumes. So a pod whose cache is on NVMe first runs ``cache_owner``: one init
container that chowns that one directory (not recursively: everything under it is written by
the ray user) to the ray user, as uid 0 with CAP_CHOWN as its only capability, no privilege
escalation, no service account token and nothing else mounted. The alternatives are worse: the
Ray containers as root (the model's own code, ``trust_remote_code``, would run as root on the
node's disk), a world-writable directory (any pod on the node could swap the weights), or the
emptyDir (a recreated pod downloads everything again). The emptyDir needs none of it: the
kubelet makes it group-writable for the pod's ``fsGroup``.
"""

from __future__ import annotations

from controller.workspace import podsecurity
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


def cache_owner(plan: Plan, image: str) -> list[dict]:
    """The init container that gives the NVMe cache directory to the ray user ([] for an emptyDir).

    ``image`` is the serve image (already on the node for the Ray container; it has ``chown``)."""
    if not plan.local_nvme:
        return []
    owner = f"{podsecurity.RAY_UID}:{podsecurity.RAY_GID}"
    return [{
        "name": "model-cache-owner",
        "image": image,
        "command": ["chown", owner, MOUNT_PATH],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                      "limits": {"cpu": "100m", "memory": "64Mi"}},
        "securityContext": {
            "runAsUser": 0, "runAsNonRoot": False, "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
        },
        "volumeMounts": [mount()],
    }]


def env() -> list[dict]:
    """huggingface_hub and transformers keep their cache under ``$HF_HOME``."""
    return [{"name": "HF_HOME", "value": MOUNT_PATH}]
