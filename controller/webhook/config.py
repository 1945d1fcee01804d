"""The ValidatingWebhookConfiguration that sends Workspace CREATE/UPDATE to our webhook."""

from __future__ import annotations

import base64
from typing import Any

from controller.api.workspace import GROUP, VERSIONS
from controller.runtime.kinds import VALIDATING_WEBHOOK_CONFIGURATIONS as WEBHOOK_CONFIGS
from controller.webhook.server import VALIDATE_PATH

CONFIGURATION_NAME = "kaito-workspace-validation"
WEBHOOK_NAME = "validation.workspace.kaito.sh"


def render_validating_webhook_configuration(
    ca_bundle: bytes,
    *,
    url: str | None = None,
    service_name: str | None = None,
    service_namespace: str | None = None,
    service_port: int = 443,
    path: str = VALIDATE_PATH,
    name: str = CONFIGURATION_NAME,
    failure_policy: str = "Fail",
    timeout_seconds: int = 10,
    namespace_selector: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The configuration object, pointing either at ``url`` (local runs: https://127.0.0.1:PORT/validate)
    or at a Service (in a cluster). ``ca_bundle`` is the PEM CA that signed the serving cert;
    ``namespace_selector`` (a LabelSelector) limits which namespaces' Workspaces are sent."""
    if (url is None) == (service_name is None):
        raise ValueError("give exactly one of url or service_name")
    client_config: dict[str, Any] = {"caBundle": base64.b64encode(ca_bundle).decode()}
    if url is not None:
        client_config["url"] = url
    else:
        client_config["service"] = {
            "name": service_name,
            "namespace": service_namespace or "kaito-system",
            "path": path,
            "port": service_port,
        }
    webhook: dict[str, Any] = {
        "name": WEBHOOK_NAME,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": failure_policy,
        "matchPolicy": "Equivalent",
        "timeoutSeconds": timeout_seconds,
        "clientConfig": client_config,
        "rules": [
            {
                "apiGroups": [GROUP],
                "apiVersions": list(VERSIONS),
                "operations": ["CREATE", "UPDATE"],
                "resources": ["workspaces"],
                "scope": "Namespaced",
            }
        ],
    }
    if namespace_selector is not None:
        webhook["namespaceSelector"] = namespace_selector
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "kaito-py"}},
        "webhooks": [webhook],
    }


def apply_validating_webhook_configuration(api_client: Any, config: dict[str, Any]) -> dict[str, Any]:
    """Create the configuration, or replace the one of the same name (e.g. with a new caBundle).

    ``api_client`` is a ``kubernetes.client.ApiClient``.
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.AdmissionregistrationV1Api(api_client)
    name = config["metadata"]["name"]
    try:
        return api_client.sanitize_for_serialization(api.create_validating_webhook_configuration(config))
    except ApiException as exc:
        if exc.status != 409:
            raise
    current = api.read_validating_webhook_configuration(name)
    body = {
        **config,
        "metadata": {**config["metadata"], "resourceVersion": current.metadata.resource_version},
    }
    return api_client.sanitize_for_serialization(api.replace_validating_webhook_configuration(name, body))


def ca_bundle_patch(current: dict[str, Any], ca_bundle: bytes) -> list[dict[str, Any]]:
    """The JSON patch that sets every webhook's caBundle of ``current`` to ``ca_bundle`` ([] if set).

    Each replace is guarded by a ``test`` of that webhook's name, so a configuration edited in
    between (webhooks reordered) fails the patch instead of writing the CA into the wrong entry.
    """
    want = base64.b64encode(ca_bundle).decode()
    ops: list[dict[str, Any]] = []
    for i, hook in enumerate(current.get("webhooks") or []):
        if (hook.get("clientConfig") or {}).get("caBundle") == want:
            continue
        ops.append({"op": "test", "path": f"/webhooks/{i}/name", "value": hook.get("name")})
        ops.append({"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": want})
    return ops


def patch_ca_bundle(client: Any, ca_bundle: bytes, name: str = CONFIGURATION_NAME) -> bool:
    """Patch only the caBundle of the configuration ``name`` (the chart creates the rest).

    ``client`` is a ``controller.runtime`` client. Returns True if a patch was sent. Needs just
    ``get`` and ``patch`` on that one configuration (RBAC ``resourceNames``), never create or
    delete: who registers which webhooks stays the installer's decision.
    """
    current = client.get(WEBHOOK_CONFIGS, name)
    ops = ca_bundle_patch(current, ca_bundle)
    if not ops:
        return False
    client.patch(WEBHOOK_CONFIGS, name, ops, patch_type="json")
    return True
