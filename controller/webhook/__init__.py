"""The validating admission webhook for Workspaces: the AdmissionReview core in ``admission``, the
HTTPS server in ``server``, certificates in ``certs`` and the ValidatingWebhookConfiguration in
``config``. The pure rules it applies are ``controller.api.validation``, which the reconciler runs
too."""

from controller.webhook.admission import review
from controller.webhook.certs import ServingCerts, generate_serving_certs
from controller.webhook.config import (
    apply_validating_webhook_configuration,
    render_validating_webhook_configuration,
)
from controller.webhook.server import WebhookServer

__all__ = [
    "ServingCerts",
    "WebhookServer",
    "apply_validating_webhook_configuration",
    "generate_serving_certs",
    "render_validating_webhook_configuration",
    "review",
]
