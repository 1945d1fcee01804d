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

The drivers and the prefix are the operator's settings (``MountPolicy``: kaito-controller's
``--allowed-csi-drivers`` and ``--node-path-prefix``, the chart's ``controller.dataSources``), the
constants below their defaults; a value that would widen the rule to everything (``/``, a driver
name that is not one) is refused when the operator starts, not discovered in a pod.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ALLOWED_CSI_DRIVERS",
    "DEFAULT_MOUNT_POLICY",
    "INPUT_VOLUME_TYPES",
    "NODE_PATH_PREFIX",
    "OUTPUT_VOLUME_TYPES",
    "MountPolicy",
    "csi_driver_list",
    "node_path_prefix",
    "node_path_problem",
    "volume_source_problem",
]

INPUT_VOLUME_TYPES = ("persistentVolumeClaim", "configMap", "emptyDir", "csi")
OUTPUT_VOLUME_TYPES = ("persistentVolumeClaim", "emptyDir", "csi")  # a ConfigMap cannot be written
# Azure's file and blob drivers (what Kaito's users mount models and datasets from on AKS).
ALLOWED_CSI_DRIVERS = ("file.csi.azure.com", "blob.csi.azure.com")
NODE_PATH_PREFIX = "/var/lib/kaito-py/"
# a CSI driver's name, as the CSIDriver object's: a DNS-1123 subdomain of at most 63 characters
_CSI_DRIVER = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


@dataclass(frozen=True)
class MountPolicy:
    """Which CSI drivers a Workspace may name and under which node directory its paths must lie."""

    csi_drivers: tuple[str, ...] = ALLOWED_CSI_DRIVERS
    node_path_prefix: str = NODE_PATH_PREFIX


DEFAULT_MOUNT_POLICY = MountPolicy()


def csi_driver_list(text: str) -> tuple[str, ...]:
    """``--allowed-csi-drivers``: comma-separated driver names ("" allows none); ValueError says
    which entry is not a driver name."""
    drivers = tuple(d.strip() for d in text.split(",") if d.strip())
    for driver in drivers:
        if len(driver) > 63 or not _CSI_DRIVER.match(driver):
            raise ValueError(f"{driver[:80]!r} is not a CSI driver name (a DNS subdomain of at most 63 "
                             "lowercase letters, digits, '-' and '.', e.g. file.csi.azure.com)")
    return drivers


def node_path_prefix(text: str) -> str:
    """``--node-path-prefix``: an absolute, normalised directory below ``/`` (returned with a
    trailing ``/``); ValueError otherwise, since ``/`` or a ``..`` would let a workspace mount
    any directory of a node."""
    path = text.strip()
    normal = posixpath.normpath(path) if path else ""
    if not path.startswith("/") or ".." in path.split("/") or normal in ("/", "//") or "\0" in path:
        raise ValueError(f"{text[:200]!r} must be an absolute directory below / without '..', "
                         "e.g. /var/lib/kaito-py/")
    if normal != path.rstrip("/"):
        raise ValueError(f"{text[:200]!r} is not normalised: write {normal}/")
    return normal + "/"


def volume_source_problem(source: Any, allowed: tuple[str, ...] = INPUT_VOLUME_TYPES,
                          policy: MountPolicy = DEFAULT_MOUNT_POLICY) -> str | None:
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
    if kind == "csi" and body.get("driver") not in policy.csi_drivers:
        allowed_drivers = ", ".join(policy.csi_drivers) or "none (this operator allows no CSI driver)"
        return f"CSI driver {body.get('driver')!r} is not allowed: use one of {allowed_drivers}"
    return None


def node_path_problem(path: str, prefix: str = NODE_PATH_PREFIX) -> str | None:
    """Why the node directory ``path`` may not be mounted, or None (``prefix`` ends with ``/``)."""
    normal = posixpath.normpath(path)
    if not path.startswith("/") or ".." in path.split("/") or not (normal + "/").startswith(prefix):
        return (
            f"{path[:200]!r} is not under {prefix}: a workspace may mount only directories an "
            f"administrator provides there (or use a volumeSource: a PersistentVolumeClaim, for example)"
        )
    if normal + "/" == prefix:
        return f"{path!r} is the whole of {prefix}: name a directory under it"
    return None
