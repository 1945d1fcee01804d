"""Helpers for the workspace controller's integration tests: CRDs, a controller run in-process,
waiting, and playing the parts of the provisioner (Machine Ready) and KubeRay (RayService status)."""

from __future__ import annotations

import contextlib
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from k8s_helpers import (  # noqa: F401 (re-exported)
    CRDS,
    EVENTS,
    NAMESPACES,
    gone,
    install_project_crds,
    wait_for,
    wait_for_events,
)
from k8s_helpers import make_namespace as _make_namespace

from controller.api.kinds import MACHINES, NODECLAIMS, RAYSERVICES, WORKSPACES
from controller.runtime import Client, Manager, RestClient
from controller.runtime.client import ResourceKind
from controller.workspace import names
from controller.workspace.reconciler import Options
from controller.workspace.setup import setup_workspace_controller
from provisioner.machine_controller import Options as ProvisionerOptions
from provisioner.main import Config, Provisioner, build

REPO = Path(__file__).resolve().parents[3]


def install_crds(client: Client, timeout: float = 60.0) -> None:
    """Create (or replace) the project's CRDs from config/crd and wait until each kind is served."""
    install_project_crds(client, (WORKSPACES, MACHINES, NODECLAIMS, RAYSERVICES), timeout=timeout)


def make_namespace(client: Client) -> str:
    return _make_namespace(client, "ws")


@contextlib.contextmanager
def running_controller(kubeconfig: str, workers: int = 2, *, allow_load_balancer: bool = False,
                       node_provisioner: str = "gpu-provisioner",
                       orphan_grace_seconds: float = 300.0, orphan_interval_seconds: float = 60.0,
                       relaunch: tuple[int, float] = (3, 60.0), hf_endpoint: str | None = None,
                       **overrides: Any) -> Iterator[Manager]:
    """A Manager with the workspace controller, on free ports, without leader election."""
    client = RestClient.from_kubeconfig(kubeconfig)
    mgr = Manager(
        client,
        name=f"kaito-test-{uuid.uuid4().hex[:6]}",
        leader_election=False,
        health_port=0,
        metrics_port=0,
        bind_host="127.0.0.1",
    )
    options = Options(machine_poll_seconds=1.0, inference_poll_seconds=5.0, deletion_poll_seconds=0.5,
                      allow_load_balancer=allow_load_balancer, node_provisioner=node_provisioner,
                      orphan_grace_seconds=orphan_grace_seconds,
                      orphan_interval_seconds=orphan_interval_seconds,
                      relaunch_limit=relaunch[0], relaunch_backoff_seconds=relaunch[1],
                      hf_endpoint=hf_endpoint)
    setup_workspace_controller(mgr, workers=workers, options=options, **overrides)
    mgr.start()
    try:
        yield mgr
    finally:
        mgr.stop()
        client.close()


@contextlib.contextmanager
def running_provisioner(kubeconfig: str, inventory_ns: str, node_api: str = "machine",
                        registration_ttl: float = 15 * 60.0) -> Iterator[Provisioner]:
    """The real provisioner with its fake cloud (Nodes appear in ``inventory_ns``'s bookkeeping),
    serving ``node_api``'s objects (the controller's ``node_api`` must be the same)."""
    client = RestClient.from_kubeconfig(kubeconfig)
    config = Config(
        cloud="fake",
        node_api=node_api,
        leader_election=False,
        health_port=None,
        metrics_port=None,
        fake_namespace=inventory_ns,
        fake_delay=0.3,
        fake_ready_delay=0.3,
        fake_tick=0.2,
        options=ProvisionerOptions(registration_ttl=registration_ttl),
    )
    prov = build(client, config)
    prov.start()
    try:
        yield prov
    finally:
        prov.stop()
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


def machines_of(client: Client, ns: str, name: str, kind: ResourceKind = MACHINES) -> list[dict]:
    items, _ = client.list(kind, label_selector=names.owner_selector(ns, name))
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
