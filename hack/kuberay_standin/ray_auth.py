"""Ray's token authentication on the stand-in's Ray, as KubeRay v1.6 wires it for a RayCluster.

KubeRay, for ``rayClusterConfig.authOptions.mode: token``: a Secret named after the RayCluster
with a random token (32 random bytes, base64) under ``auth_token``; ``RAY_AUTH_MODE=token`` and
``RAY_AUTH_TOKEN`` (from that Secret) in every Ray container; the token on its own dashboard calls
(``x-ray-authorization: Bearer <token>``). The stand-in runs one Ray head for every RayService, so
its head has one token, generated at start (or given: ``RAY_AUTH_TOKEN`` of the stand-in's
environment), that every node it starts and every dashboard call it makes carries; the Secret of
a RayService that asks for token auth holds that token, so a client reads it where it would from
KubeRay's (``controller/workspace/ray_auth.token_secret_name`` of the cluster's name).

Ray (2.60: ``ray/_private/authentication/``): with ``RAY_AUTH_MODE=token`` the GCS and raylets
refuse gRPC calls without the token (UNAUTHENTICATED) and the dashboard answers 401 without it,
403 with a wrong one; its health paths (``/api/healthz``, ``/api/gcs_healthz``...) stay open.
Serve's HTTP proxy (the serve port) is not behind Ray's auth: the endpoints' own API key is.
"""

from __future__ import annotations

import base64
import secrets

from controller.workspace.ray_auth import token_secret_name

MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_SECRET_KEY = "auth_token"  # KubeRay's RAY_AUTH_TOKEN_SECRET_KEY
CLUSTER_LABEL = "ray.io/cluster"  # what KubeRay labels the token Secret with
HEADER = "x-ray-authorization"  # KubeRay's dashboard client's header (Ray reads it after Authorization)


def generate_token() -> str:
    """A token as KubeRay makes one (``generateRandomToken(32)``)."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def node_env(token: str | None) -> dict[str, str]:
    """What a ``ray start`` of the stand-in gets: token mode with the token, or auth off."""
    if token is None:
        return {MODE_ENV: "disabled"}
    return {MODE_ENV: "token", TOKEN_ENV: token}


def headers(token: str | None) -> dict[str, str]:
    """The header KubeRay's dashboard client sends (nothing without a token)."""
    return {HEADER: f"Bearer {token}"} if token else {}


def wants_token_auth(rayservice: dict) -> bool:
    """True when the RayService's cluster asks for ``authOptions.mode: token``."""
    cluster = (rayservice.get("spec") or {}).get("rayClusterConfig") or {}
    return ((cluster.get("authOptions") or {}).get("mode")) == "token"


def token_secret(rayservice: dict, cluster: str, token: str) -> dict:
    """The token Secret of ``rayservice``'s Ray cluster ``cluster``, named as KubeRay names it.
    KubeRay's is owned by the RayCluster; the stand-in makes no RayCluster, so the RayService owns
    it (it still goes with the workspace)."""
    meta = rayservice["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": token_secret_name(cluster),
            "namespace": meta["namespace"],
            "labels": {CLUSTER_LABEL: cluster},
            "ownerReferences": [{
                "apiVersion": rayservice.get("apiVersion", "ray.io/v1"), "kind": "RayService",
                "name": meta["name"], "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "stringData": {TOKEN_SECRET_KEY: token},
    }
