"""What a Workspace may mount into its pods: the allowed volume types and node paths.

Why: an adapter's or a tuning job's ``volumeSource`` and ``path`` become volumes of pods the
controller creates, with the controller's authority. Taken verbatim, a user who may create
Workspaces but not Pods could mount ``/`` of a GPU node (``hostPath``), another team's NFS export,
or any Secret of the namespace, and with a ``name`` key even replace another volume of the pod.
So only volume types that stay inside the namespace's own storage are accepted:

- ``persistentVolumeClaim``, ``configMap`` (inputs only) and ``emptyDir``;
- ``csi`` for the drivers in ``ALLOWED_CSI_DRIVERS`` (inline CSI volumes are whatever their driver
  makes of them, so each driver is admitted by name, as Pod Security's "restricted" profile asks);

and a ``volumeSource`` holds exactly one of them and nothing else. A node ``path`` must lie under
``NODE_PATH_PREFIX``, a directory an administrator provisions on the nodes for this purpose, and
may not climb out of it (no ``..``, absolute and normalised).
"""

from __future__ import annotations

import posixpath
from typing import Any

__all__ = [
    "ALLOWED_CSI_DRIVERS",
    "INPUT_VOLUME_TYPES",
    "NODE_PATH_PREFIX",
    "OUTPUT_VOLUME_TYPES",
    "node_path_problem",
    "volume_source_problem",
]

INPUT_VOLUME_TYPES = ("persistentVolumeClaim", "configMap", "emptyDir", "csi")
OUTPUT_VOLUME_TYPES = ("persistentVolumeClaim", "emptyDir", "csi")  # a ConfigMap cannot be written
# Azure's file and blob drivers (what Kaito's users mount models and datasets from on AKS).
ALLOWED_CSI_DRIVERS = ("file.csi.azure.com", "blob.csi.azure.com")
NODE_PATH_PREFIX = "/var/lib/kaito-py/"


def volume_source_problem(source: Any, allowed: tuple[str, ...] = INPUT_VOLUME_TYPES) -> str | None:
    """Why ``source`` (a core/v1 VolumeSource as the user wrote it) may not be mounted, or None."""
    if not isinstance(source, dict):
        return "must be an object holding one volume type"
    if len(source) != 1:
        keys = ", ".join(sorted(map(str, source))) or "none"
        return f"must hold exactly one volume type of {', '.join(allowed)} and nothing else (found: {keys})"
    (kind, body), = source.items()
    if kind not in allowed:
        return (
            f"volume type {kind!r} is not allowed: use one of {', '.join(allowed)} "
            "(a workspace may not mount node paths, network shares or Secrets)"
        )
    if not isinstance(body, dict):
        return f"{kind} must be an object"
    if kind == "csi" and body.get("driver") not in ALLOWED_CSI_DRIVERS:
        return (
            f"CSI driver {body.get('driver')!r} is not allowed: use one of {', '.join(ALLOWED_CSI_DRIVERS)}"
        )
    return None


def node_path_problem(path: str) -> str | None:
    """Why the node directory ``path`` may not be mounted, or None."""
    normal = posixpath.normpath(path)
    if not path.startswith("/") or ".." in path.split("/") or not (normal + "/").startswith(NODE_PATH_PREFIX):
        return (
            f"{path[:200]!r} is not under {NODE_PATH_PREFIX}: a workspace may mount only directories an "
            f"administrator provides there (or use a volumeSource: a PersistentVolumeClaim, for example)"
        )
    if normal + "/" == NODE_PATH_PREFIX:
        return f"{path!r} is the whole of {NODE_PATH_PREFIX}: name a directory under it"
    return None
