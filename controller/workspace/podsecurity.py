"""The security defaults of the pods the controller creates for a Workspace.

Why: a Workspace author picks the data those pods read (datasets from the internet, adapter
images), so a pod must not be a foothold: no root, no Linux capabilities, no privilege
escalation, the runtime's seccomp profile - Pod Security's "restricted" profile, which a
namespace may enforce anyway. The uid is the official Ray image's ``ray`` user (1000, group
100), which the serving/tuning image is built on; the busybox and crane helpers only copy files
into and out of emptyDirs (mode 0777), which works under any uid.
"""

from __future__ import annotations

import copy

__all__ = ["CONTAINER_SECURITY", "POD_SECURITY", "restricted_pod"]

RAY_UID, RAY_GID = 1000, 100
POD_SECURITY: dict = {
    "runAsNonRoot": True,
    "runAsUser": RAY_UID,
    "runAsGroup": RAY_GID,
    "fsGroup": RAY_GID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY: dict = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def restricted_pod(spec: dict) -> dict:
    """A copy of the pod ``spec`` with the pod- and container-level defaults set on it and on
    every container and init container (what a spec sets itself is kept)."""
    out = copy.deepcopy(spec)
    out["securityContext"] = {**POD_SECURITY, **(out.get("securityContext") or {})}
    for key in ("initContainers", "containers"):
        for container in out.get(key) or []:
            container["securityContext"] = {**CONTAINER_SECURITY, **(container.get("securityContext") or {})}
    return out
