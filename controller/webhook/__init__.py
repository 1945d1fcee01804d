"""The validating admission webhook for Workspaces: pure rules in ``validation``, the AdmissionReview
core in ``admission``, the HTTPS server in ``server``, certificates in ``certs`` and the
ValidatingWebhookConfiguration in ``config``."""

from controller.webhook.admission import review
from controller.webhook.certs import ServingCerts, generate_serving_certs
from controller.webhook.config import (
    apply_validating_webhook_configuration,
    render_validating_webhook_configuration,
)
from controller.webhook.server import WebhookServer
from controller.webhook.validation import (
    FieldError,
    ValidationResult,
    validate_workspace,
    validate_workspace_object,
)

__all__ = [
    "FieldError",
    "ServingCerts",
    "ValidationResult",
    "WebhookServer",
    "apply_validating_webhook_configuration",
    "generate_serving_certs",
    "render_validating_webhook_configuration",
    "review",
    "validate_workspace",
    "validate_workspace_object",
]
