"""Ray's token authentication on a workspace's Ray cluster, asked of KubeRay (v1.6+).

Why: the Ray head's dashboard (8265, whose job API runs any code it is sent) and GCS (6379) take
requests from whoever reaches them. With ``rayClusterConfig.authOptions: {mode: token}`` KubeRay
v1.6 makes each RayCluster a Secret of its own, named after the cluster, holding a random token
under ``auth_token`` (owned by the RayCluster, so it goes with it), sets ``RAY_AUTH_MODE=token``
and ``RAY_AUTH_TOKEN`` (a ``secretKeyRef`` to that Secret) in the Ray container of the head and
of every worker and in its ``wait-gcs-ready`` init container, and sends the token
(``x-ray-authorization: Bearer``) on its own dashboard calls: the serve-config PUT and the status
polls. So the controller asks for it and holds no Secret permission: it never creates, reads or
sees the token.

KubeRay injects the variables only where the container does not set them already, so no pod
template we build may name ``RAY_AUTH_MODE`` or ``RAY_AUTH_TOKEN`` (``KUBERAY_SET_ENV``).

KubeRay refuses ``mode: token`` without a ``rayVersion`` of at least 2.52, so the cluster names
the Ray version of the serve image (``RAY_VERSION``: the official Ray image ``config/images.yaml``
builds on, which ``pyproject.toml`` pins; a test holds them together). Given a Ray version of
2.53 or later, KubeRay also probes the Ray containers on the dashboard agent's ``/api/healthz``,
which Ray leaves open to probes under token auth.

Off (``--no-ray-token-auth``) is for clusters whose KubeRay is older than v1.6: their CRD has no
``authOptions``, the API server prunes it, and the cluster would run open while the RayService
looked protected.
"""

from __future__ import annotations

RAY_VERSION = "2.60.0"  # the serve image's Ray (config/images.yaml bases.ray, pyproject's ray pin)
MODE_TOKEN = "token"
TOKEN_SECRET_KEY = "auth_token"  # KubeRay's RAY_AUTH_TOKEN_SECRET_KEY
KUBERAY_SET_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")
KUBERAY_MAX_NAME = 50  # utils.CheckName


def cluster_fields(token_auth: bool) -> dict:
    """What a RayService's ``rayClusterConfig`` says about Ray's version and authentication."""
    fields: dict = {"rayVersion": RAY_VERSION}
    if token_auth:
        fields["authOptions"] = {"mode": MODE_TOKEN}
    return fields


def token_secret_name(ray_cluster_name: str) -> str:
    """The Secret KubeRay makes for a RayCluster: KubeRay's ``utils.CheckName`` of the cluster's
    name (its last 50 characters; a leading digit or punctuation becomes ``r``). A RayCluster of a
    RayService is named ``<rayservice>-<5 random>``, so a long workspace loses its first letters."""
    name = ray_cluster_name[-KUBERAY_MAX_NAME:]
    if name and (name[0].isdigit() or not name[0].isalnum()):
        name = "r" + name[1:]
    return name
