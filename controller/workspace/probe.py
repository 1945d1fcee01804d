"""The timeline's last phase: one tiny request through the workspace's endpoint, answered.

Why the controller asks (once per workspace): "weights loaded" is what KubeRay can report, but a
user's cold start ends when a request is answered (the first forward pass, the proxy's routes, the
Service), and nothing in a RayService's status says that. So once the weights are loaded the
reconciler sends one ``/v1/completions`` request for one token, as a user would, and records the
answer's time. It is sent at most until it succeeds (never again after), with a short timeout so a
slow replica only delays the phase, never a worker for long; any failure (a refused connection, a
5xx, a 401 when the endpoints require an API key) leaves the phase open and the pass retries later.

Where it goes (``--first-request-url``): ``service``, the workspace's Service by its cluster DNS
name (``http://<ws>.<ns>.svc:80``), in a cluster; ``rayservice-status``, the address the local
KubeRay stand-in publishes in ``status.serveEndpoint`` (the local loop has no Service routing); or
``off``. The URL is never taken from an object in a cluster, so nobody who can write a RayService's
status can point the controller elsewhere.
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


def endpoint(source: URLSource, workspace: str, namespace: str, rayservice: dict | None) -> str | None:
    """The base URL the probe uses, or None (off, or the stand-in has not published one yet)."""
    if source == "off":
        return None
    if source == "rayservice-status":
        url = ((rayservice or {}).get("status") or {}).get("serveEndpoint")
        return str(url).rstrip("/") if url else None
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
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.info("first request to %s not answered yet: %s", base_url, exc)
        return False
