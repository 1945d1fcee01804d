"""Objects and scripted list/watch answers for the pure logic of informers and controllers.

Only the informer's own decisions are under test here (diffing a relist, re-watching from the
right resourceVersion, handler order); everything about the real API server is tested in
tests/integration/runtime against a real kube-apiserver.
"""

from __future__ import annotations

from typing import Any

from controller.runtime.fake import FakeClient
from controller.runtime.kinds import CONFIGMAPS


def obj(name: str, rv: str, ns: str = "ns", **meta: Any) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": rv, **meta},
    }


def event(etype: str, o: dict) -> dict:
    return {"type": etype, "object": o}


def scripted(lists: list[tuple[list[dict], str]], watches: list[tuple[list, Any]]) -> FakeClient:
    """A FakeClient whose ConfigMap lists and watches answer from these scripts."""
    client = FakeClient()
    client.script_lists(CONFIGMAPS, lists)
    client.script_watches(CONFIGMAPS, watches)
    return client


def list_calls(client: FakeClient) -> int:
    return len(client.calls_of("list"))


def watch_rvs(client: FakeClient) -> list[str | None]:
    return [c.resource_version for c in client.calls_of("watch")]
