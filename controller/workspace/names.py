"""Names, labels and well-known keys of everything the Workspace controller creates.

Why deterministic names: a reconcile derives what should exist from observed state only. If a
Machine's name were random (Kaito's ``"ws" + sha256(ns+name+time)``), a controller that crashed
after a create but before recording it would create a second Machine on restart. Naming the i-th
Machine from a hash of ``namespace/name`` makes a repeated create an ``AlreadyExists`` instead.
"""

from __future__ import annotations

import hashlib
import re

# FINALIZER (Kaito's "workspace.finalizer.kaito.sh") lets the controller delete the
# cluster-scoped, un-owned Machines before the Workspace goes; the API package owns the name.
from controller.api.workspace import FINALIZER, LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE

# Every GPU node gets this taint so only workloads that tolerate it (ours) land there.
GPU_TAINT_KEY = "sku"
GPU_TAINT_VALUE = "gpu"
GPU_TAINT_EFFECT = "NoSchedule"

# The Karpenter provisioner our Machines name; gpu-provisioner ignores the value but Karpenter
# tooling expects the label.
PROVISIONER_NAME = "default"
ANNOTATION_DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"

SERVE_PORT = 8000
SERVICE_PORT = 80

MAX_LABEL = 63
MAX_RAYSERVICE = 47  # KubeRay appends "-xxxxx" to name the RayCluster (53 - 6)

__all__ = [
    "FINALIZER",
    "LABEL_WORKSPACE",
    "LABEL_WORKSPACE_NAMESPACE",
    "machine_name",
    "owner_labels",
    "rayservice_name",
    "service_name",
    "short_hash",
    "tuning_job_name",
]


def short_hash(text: str, length: int = 10) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def machine_name(namespace: str, name: str, index: int) -> str:
    """The ``index``-th Machine of workspace ``namespace/name``: ``ws<hash10>-<index>``.

    Machines are cluster-scoped, so the namespace must be in the hash; the result is a valid
    DNS-1123 label well under 63 characters whatever the workspace is called.
    """
    if index < 0:
        raise ValueError("machine index must be >= 0")
    return f"ws{short_hash(f'{namespace}/{name}')}-{index}"


def owner_labels(namespace: str, name: str) -> dict[str, str]:
    """The labels tying a cluster-scoped object (Machine, Node) back to its workspace."""
    return {LABEL_WORKSPACE: name, LABEL_WORKSPACE_NAMESPACE: namespace}


def owner_selector(namespace: str, name: str) -> str:
    """``owner_labels`` as a label-selector string, for list calls."""
    return ",".join(f"{k}={v}" for k, v in owner_labels(namespace, name).items())


_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _dns1035(name: str, limit: int) -> str:
    """``name`` if it is a DNS-1035 label within ``limit``; else a truncated, hash-suffixed form.

    Workspace names are DNS-1123 labels (may start with a digit, up to 63 chars), but Services
    need DNS-1035 and RayServices at most 47 characters.
    """
    if len(name) <= limit and _DNS1035.match(name):
        return name
    suffix = short_hash(name, 8)
    stem = re.sub(r"[^-a-z0-9]", "-", name.lower())
    if not stem[:1].isalpha():
        stem = "ws-" + stem
    stem = stem[: limit - len(suffix) - 1].rstrip("-")
    return f"{stem}-{suffix}"


def rayservice_name(workspace: str) -> str:
    return _dns1035(workspace, MAX_RAYSERVICE)


def service_name(workspace: str) -> str:
    return _dns1035(workspace, MAX_LABEL)


def tuning_job_name(workspace: str) -> str:
    # Job names become pod-name prefixes and a label value: keep them <= 63 with room for "-xxxxx".
    return _dns1035(workspace, 52)
