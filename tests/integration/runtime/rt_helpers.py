"""Helpers for controller/runtime integration tests: a test CRD, namespaces, waiting, etcd compaction.

The CRD (widgets.rt.test.kaito.sh) is deliberately not a project kind: the runtime is generic,
so its tests use a kind nothing else knows.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
import uuid

from controller.runtime import Client, NotFound, ResourceKind
from controller.runtime.kinds import CUSTOM_RESOURCE_DEFINITIONS, NAMESPACES

CRDS = CUSTOM_RESOURCE_DEFINITIONS
WIDGETS = ResourceKind("rt.test.kaito.sh", "v1", "widgets", "Widget", namespaced=True)

WIDGET_CRD = {
    "metadata": {"name": "widgets.rt.test.kaito.sh"},
    "spec": {
        "group": "rt.test.kaito.sh",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


def install_widget_crd(client: Client, timeout: float = 30.0) -> None:
    """Create the CRD (if absent) and wait until the API serves it."""
    try:
        client.get(CRDS, WIDGET_CRD["metadata"]["name"])
    except NotFound:
        client.create(CRDS, WIDGET_CRD)
    deadline = time.monotonic() + timeout
    while True:
        crd = client.get(CRDS, WIDGET_CRD["metadata"]["name"])
        conds = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []}
        if conds.get("Established") == "True":
            try:
                client.list(WIDGETS, "default")
                return
            except NotFound:
                pass
        if time.monotonic() > deadline:
            raise TimeoutError("widget CRD not established")
        time.sleep(0.1)


def make_namespace(client: Client) -> str:
    name = f"rt-{uuid.uuid4().hex[:8]}"
    client.create(NAMESPACES, {"metadata": {"name": name}})
    return name


def widget(name: str, **spec: object) -> dict:
    return {"metadata": {"name": name}, "spec": dict(spec)}


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def etcd_compact(etcd_url: str) -> int:
    """Compact etcd to its current revision through the gRPC gateway; returns that revision."""

    def post(path: str, body: dict) -> dict:
        req = urllib.request.Request(
            f"{etcd_url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    rev = int(post("/v3/kv/range", {"key": base64.b64encode(b"/").decode()})["header"]["revision"])
    post("/v3/kv/compaction", {"revision": rev, "physical": True})
    return rev
