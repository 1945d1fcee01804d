"""Helpers for the KubeRay stand-in's integration tests: the RayService CRD, RayService objects
running the echo app, waiting on status, reading Serve's state."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from k8s_helpers import install_project_crds

from controller.api.kinds import RAYSERVICES
from controller.runtime.client import Client

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
T = TypeVar("T")


def install_rayservice_crd(client: Client, timeout: float = 60.0) -> None:
    """KubeRay's own RayService CRD (hack/upstream_crds.py), created or updated, then served."""
    install_project_crds(client, (RAYSERVICES,), files=["ray.io_rayservices.yaml"], timeout=timeout)


def wait_for(fn: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll fn until it returns something truthy; fail with `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def echo_serve_config(
    message: str = "hello",
    app: str = "echo",
    import_path: str | None = None,
    route_prefix: str = "/",
    **extra_args: Any,
) -> str:
    cfg = {
        "applications": [
            {
                "name": app,
                "route_prefix": route_prefix,
                "import_path": import_path or "standin_echo_app:build",
                "args": {"message": message, **extra_args},
            }
        ]
    }
    return yaml.safe_dump(cfg, sort_keys=False)


def rayservice(name: str, namespace: str, serve_config_v2: str) -> dict:
    """A RayService as the workspace controller shapes it (rayClusterConfig is ignored locally)."""
    return {
        "apiVersion": RAYSERVICES.api_version,
        "kind": RAYSERVICES.kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "serveConfigV2": serve_config_v2,
            "rayClusterConfig": {
                "headGroupSpec": {
                    "rayStartParams": {"num-gpus": "0"},
                    "template": {
                        "spec": {"containers": [{"name": "ray-head", "image": "rayproject/ray:2.60.0"}]}
                    },
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "gpu",
                        "replicas": 1,
                        "minReplicas": 1,
                        "maxReplicas": 1,
                        "rayStartParams": {"num-gpus": "1"},
                        "template": {},
                    }
                ],
            },
        },
    }


def condition(obj: dict, type_: str) -> dict | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def is_ready(obj: dict) -> bool:
    cond = condition(obj, "Ready")
    return bool(cond and cond["status"] == "True")


def app_status(obj: dict, app: str, where: str = "activeServiceStatus") -> dict:
    return (((obj.get("status") or {}).get(where) or {}).get("applicationStatuses") or {}).get(app) or {}


def get_rs(client: Client, namespace: str, name: str) -> dict:
    return client.get(RAYSERVICES, name, namespace)


def wait_ready(client: Client, namespace: str, name: str, generation: int = 1, timeout: float = 90.0) -> dict:
    """Wait for Ready=True with the status describing `generation` and the app RUNNING."""

    def done() -> dict | None:
        obj = get_rs(client, namespace, name)
        st = obj.get("status") or {}
        if is_ready(obj) and st.get("observedGeneration") == generation:
            apps = (st.get("activeServiceStatus") or {}).get("applicationStatuses") or {}
            if apps and all(a.get("status") == "RUNNING" for a in apps.values()):
                return obj
        return None

    return wait_for(done, timeout, f"RayService {namespace}/{name} Ready at generation {generation}")


def http_get_json(url: str, timeout: float = 10.0) -> tuple[int, Any]:
    resp = httpx.get(url, timeout=timeout)
    try:
        body = resp.json()
    except ValueError:
        body = resp.text
    return resp.status_code, body


def serve_apps(dashboard_url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Serve's apps, from the dashboard (``headers``: the head's auth token, ``RayHead.auth_headers``)."""
    resp = httpx.get(f"{dashboard_url}/api/serve/applications/", timeout=10, headers=headers)
    resp.raise_for_status()
    return resp.json().get("applications") or {}
