"""The Ray dashboard's Serve REST API, as KubeRay's dashboard client uses it.

``PUT /api/serve/applications/`` takes the full declarative config (applications missing from it
are deleted); ``GET /api/serve/applications/`` returns ``applications``, ``proxies``,
``http_options``... (shared/research/ray.md §2 "CLI / REST").
"""

from __future__ import annotations

from typing import Any

import httpx

SERVE_APPS = "/api/serve/applications/"


class DashboardError(RuntimeError):
    """The dashboard refused a request (status and body in the message) or could not be reached."""


class ServeDashboard:
    def __init__(
        self, dashboard_url: str, timeout: float = 30.0, headers: dict[str, str] | None = None
    ) -> None:
        """``headers``: the head's auth token, as KubeRay's dashboard client sends it (``ray_auth``)."""
        self.url = dashboard_url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    def put_config(self, config: dict[str, Any]) -> None:
        try:
            resp = self._http.put(SERVE_APPS, json=config)
        except httpx.HTTPError as exc:
            raise DashboardError(f"PUT {self.url}{SERVE_APPS}: {exc}") from exc
        if resp.status_code != 200:
            raise DashboardError(f"PUT {self.url}{SERVE_APPS}: HTTP {resp.status_code}: {resp.text[:2000]}")

    def get_details(self) -> dict[str, Any]:
        """The whole Serve state; ``applications`` is ``{}`` while Serve is not started."""
        try:
            resp = self._http.get(SERVE_APPS)
        except httpx.HTTPError as exc:
            raise DashboardError(f"GET {self.url}{SERVE_APPS}: {exc}") from exc
        if resp.status_code != 200:
            raise DashboardError(f"GET {self.url}{SERVE_APPS}: HTTP {resp.status_code}: {resp.text[:2000]}")
        body = resp.json()
        return body if isinstance(body, dict) else {}
