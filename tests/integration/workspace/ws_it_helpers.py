"""Helpers for the workspace controller's integration tests: CRDs, a controller run in-process,
waiting, and playing the parts of the provisioner (Machine Ready) and KubeRay (RayService status)."""

from __future__ import annotations

import contextlib
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

from controller.api.kinds import MACHINES, RAYSERVICES, WORKSPACES
from controller.runtime import AlreadyExists, Client, Conflict, Manager, NotFound, ResourceKind
from controller.workspace import names
from controller.workspace.reconciler import Options
from controller.workspace.setup import setup_workspace_controller

REPO = Path(__file__).resolve().parents[3]
CRDS = ResourceKind(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False
)
NAMESPACES = ResourceKind("", "v1", "namespaces", "Namespace", namespaced=False)
EVENTS = ResourceKind("", "v1", "events", "Event", namespaced=True)

T = TypeVar("T")


def install_crds(client: Client, timeout: float = 60.0) -> None:
    """Create (or replace) the project's CRDs from config/crd and wait until each kind is served."""
    for path in sorted((REPO / "config" / "crd").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        try:
            client.create(CRDS, crd)
        except AlreadyExists:
            current = client.get(CRDS, crd["metadata"]["name"])
            crd["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            with contextlib.suppress(Conflict):
                client.update(CRDS, crd)
    for kind in (WORKSPACES, MACHINES, RAYSERVICES):
        wait_for(lambda k=kind: _served(client, k), timeout, f"{kind} served")


def _served(client: Client, kind: ResourceKind) -> bool:
    try:
        client.list(kind, "default" if kind.namespaced else None, limit=1)
        return True
    except NotFound:
        return False


def make_namespace(client: Client) -> str:
    name = f"ws-{uuid.uuid4().hex[:8]}"
    client.create(NAMESPACES, {"metadata": {"name": name}})
    return name


def wait_for(fn: Callable[[], T], timeout: float = 30.0, what: str = "condition", interval: float = 0.1) -> T:
    """Poll ``fn`` until it returns something truthy; fail with ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except NotFound as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@contextlib.contextmanager
def running_controller(kubeconfig: str, workers: int = 2, **overrides: Any) -> Iterator[Manager]:
    """A Manager with the workspace controller, on free ports, without leader election."""
    client = Client.from_kubeconfig(kubeconfig)
    mgr = Manager(
        client,
        name=f"kaito-test-{uuid.uuid4().hex[:6]}",
        leader_election=False,
        health_port=0,
        metrics_port=0,
        bind_host="127.0.0.1",
    )
    options = Options(machine_poll_seconds=1.0, inference_poll_seconds=5.0, deletion_poll_seconds=0.5)
    setup_workspace_controller(mgr, workers=workers, options=options, **overrides)
    mgr.start()
    try:
        yield mgr
    finally:
        mgr.stop()
        client.close()


def workspace_manifest(
    name: str,
    *,
    preset: str = "phi-3-mini-4k-instruct",
    instance_type: str = "Standard_NC12s_v3",
    count: int | None = None,
    tuning: dict | None = None,
    adapters: list | None = None,
) -> dict:
    resource: dict[str, Any] = {
        "instanceType": instance_type,
        "labelSelector": {"matchLabels": {"apps": name}},
    }
    if count is not None:
        resource["count"] = count
    obj: dict[str, Any] = {"metadata": {"name": name}, "resource": resource}
    if tuning is not None:
        obj["tuning"] = tuning
    else:
        obj["inference"] = {"preset": {"name": preset}, **({"adapters": adapters} if adapters else {})}
    return obj


def conditions(client: Client, ns: str, name: str) -> dict[str, dict]:
    ws = client.get(WORKSPACES, name, ns)
    return {c["type"]: c for c in (ws.get("status") or {}).get("conditions") or []}


def machines_of(client: Client, ns: str, name: str) -> list[dict]:
    items, _ = client.list(MACHINES, label_selector=names.owner_selector(ns, name))
    return sorted(items, key=lambda m: m["metadata"]["name"])


def set_machine_status(
    client: Client,
    name: str,
    ready: bool,
    node: str | None = None,
    launched: tuple[str, str, str] | None = None,
) -> None:
    """Play the provisioner: write a Machine's status conditions (and nodeName)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    conds = [
        {
            "type": "Ready",
            "status": "True" if ready else "False",
            "reason": "Ready" if ready else "NotReady",
            "message": "",
            "lastTransitionTime": now,
        }
    ]
    if launched is not None:
        conds.append(
            {
                "type": "MachineLaunched",
                "status": launched[0],
                "reason": launched[1],
                "message": launched[2],
                "lastTransitionTime": now,
            }
        )
    status: dict[str, Any] = {"conditions": conds}
    if node:
        status["nodeName"] = node
        status["providerID"] = f"fake://{node}"
    client.patch(MACHINES, name, {"status": status}, subresource="status")


def set_rayservice_running(client: Client, ns: str, name: str, app: str = "llm") -> None:
    """Play KubeRay: the Ray cluster is up and every Serve application is RUNNING."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "NonZeroServeEndpoints",
                "message": "",
                "lastTransitionTime": now,
            }
        ],
        "serviceStatus": "Running",
        "numServeEndpoints": 1,
        "activeServiceStatus": {
            "rayClusterName": f"{name}-abcde",
            "applicationStatuses": {app: {"status": "RUNNING"}},
        },
    }
    client.patch(RAYSERVICES, name, {"status": status}, namespace=ns, subresource="status")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def events_for(client: Client, ns: str, name: str) -> list[dict]:
    items, _ = client.list(EVENTS, ns, field_selector=f"involvedObject.name={name}")
    return items


def gone(client: Client, kind: ResourceKind, name: str, namespace: str | None = None) -> bool:
    """True once the object no longer exists."""
    try:
        client.get(kind, name, namespace)
    except NotFound:
        return True
    return False
