"""AdmissionReview (admission.k8s.io/v1) in, AdmissionReview out: the webhook's pure core."""

from __future__ import annotations

import logging
from typing import Any

from controller.api.datasources import DEFAULT_MOUNT_POLICY, MountPolicy
from controller.api.validation import ValidationResult, validate_workspace_object
from controller.api.workspace import GROUP as WORKSPACE_GROUP
from presets.registry import Catalog

log = logging.getLogger(__name__)

ADMISSION_API_VERSION = "admission.k8s.io/v1"


def _response(uid: str, result: ValidationResult) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": result.allowed}
    if not result.allowed:
        # as controller-runtime's admission.Denied: 403 with the reason as the message
        response["status"] = {"code": 403, "reason": "Forbidden", "message": result.message}
    if result.warnings:
        response["warnings"] = result.warnings
    return response


def review(body: dict[str, Any], *, catalog: Catalog | None = None,
           mounts: MountPolicy = DEFAULT_MOUNT_POLICY) -> dict[str, Any]:
    """Answer one AdmissionReview request. Anything that is not a Workspace CREATE/UPDATE is allowed."""
    if body.get("kind") != "AdmissionReview" or not isinstance(body.get("request"), dict):
        raise ValueError("expected an admission.k8s.io/v1 AdmissionReview with a request")
    request = body["request"]
    uid = request.get("uid", "")
    kind = request.get("kind") or {}
    result = ValidationResult()
    if (
        kind.get("group") == WORKSPACE_GROUP
        and kind.get("kind") == "Workspace"
        and request.get("operation") in ("CREATE", "UPDATE")
    ):
        obj = request.get("object") or {}
        old = request.get("oldObject") if request.get("operation") == "UPDATE" else None
        result = validate_workspace_object(obj, old, catalog=catalog, mounts=mounts)
        name = f"{request.get('namespace', '')}/{request.get('name') or obj.get('metadata', {}).get('name')}"
        if result.allowed:
            log.debug("admitted %s %s", request.get("operation"), name)
        else:
            log.info("denied %s %s: %s", request.get("operation"), name, result.message)
    return {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "AdmissionReview",
        "response": _response(uid, result),
    }
