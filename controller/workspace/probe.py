"""The timeline's last phase: one tiny request through the workspace's endpoint, answered.

Why the controller asks (once per workspace): "weights loaded" is what KubeRay can report, but a
user's cold start ends when a request is answered (the first forward pass, the proxy's routes, the
Service), and nothing in a RayService's status says that. So once the weights are loaded the
reconciler sends one ``/v1/completions`` request for one token, as a user would, and records the
answer's time. It is sent at most until it succeeds (never again after), with a short timeout so a
slow replica only delays the phase, never a worker for long; any failure (a refused connection, a
5xx) leaves the phase open and the pass retries later. A 401 counts as answered: a Workspace with
an API key refuses the controller (which, by design, reads no Secrets), but the 401 comes from the
serve replica itself, after the proxy routed it, so the endpoint is up.

Where it goes (``--first-request-url``): ``service``, the workspace's Service by its cluster DNS
name (``http://<ws>.<ns>.svc:80``), in a cluster; ``rayservice-status``, the head address and
serve port that KubeRay's status carries (``rayClusterStatus.head.serviceIP`` and
``.endpoints.serve``), under ``/<namespace>/<name>``, the route the local KubeRay stand-in gives
each RayService on its one shared Serve proxy (the local loop has no Service routing); or ``off``.
In a cluster (``service``) the URL is never taken from an object, so nobody who can write a
RayService's status can point the controller elsewhere; ``rayservice-status`` is for local runs.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Literal

from controller.workspace import names

log = logging.getLogger(__name__)

URLSource = Literal["service", "rayservice-status", "off"]
URL_SOURCES: tuple[URLSource, ...] = ("service", "rayservice-status", "off")
TIMEOUT_S = 10.0


def standin_route_base(namespace: str, name: str) -> str:
    """Where the local KubeRay stand-in mounts a RayService's apps on its one Serve proxy (the
    stand-in imports this: one rule for both sides)."""
    return f"/{namespace}/{name}"


def status_endpoint(rayservice: dict) -> str | None:
    """The head's serve address from a RayService's status as KubeRay writes it (the active
    cluster's, else the pending one's), under the stand-in's route; None until the status says."""
    status = rayservice.get("status") or {}
    for part in ("activeServiceStatus", "pendingServiceStatus"):
        cluster = (status.get(part) or {}).get("rayClusterStatus") or {}
        host = (cluster.get("head") or {}).get("serviceIP")
        port = (cluster.get("endpoints") or {}).get("serve")
        if host and port:
            meta = rayservice.get("metadata") or {}
            route = standin_route_base(meta.get("namespace") or "default", meta["name"])
            return f"http://{host}:{port}{route}"
    return None


def endpoint(source: URLSource, workspace: str, namespace: str, rayservice: dict | None) -> str | None:
    """The base URL the probe uses, or None (off, or the status has no address yet)."""
    if source == "off":
        return None
    if source == "rayservice-status":
        return status_endpoint(rayservice) if rayservice else None
    return f"http://{names.service_name(workspace)}.{namespace}.svc:{names.SERVICE_PORT}"


def answered(base_url: str, model: str, timeout: float = TIMEOUT_S) -> bool:
    """True when ``POST <base_url>/v1/completions`` for one token of ``model`` gets a 2xx answer."""
    body = json.dumps({"model": model, "prompt": "Hello", "max_tokens": 1}).encode()
    req = urllib.request.Request(f"{base_url}/v1/completions", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # the URL: endpoint(), never an object's
            resp.read()
            return 200 <= resp.status < 300
    except urllib.error.HTTPError as exc:
        if exc.code == 401:  # the replica's own API-key check answered (see the module docstring)
            return True
        log.info("first request to %s not answered yet: %s", base_url, exc)
        return False
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.info("first request to %s not answered yet: %s", base_url, exc)
        return False
