"""An in-memory stand-in for Client.list/watch, for the pure logic of informers and controllers.

Only the informer's own decisions are under test here (diffing a relist, re-watching from the
right resourceVersion, handler order); everything about the real API server is tested in
tests/integration/runtime against a real kube-apiserver.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any


def obj(name: str, rv: str, ns: str = "ns", **meta: Any) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": rv, **meta},
    }


def event(etype: str, o: dict) -> dict:
    return {"type": etype, "object": o}


class FakeStream:
    """Yields scripted events, then raises the scripted error, or blocks until closed."""

    def __init__(self, events: list, end: BaseException | str | None) -> None:
        self.events = events
        self.end = end
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[dict]:
        yield from self.events
        if isinstance(self.end, BaseException):
            raise self.end
        if self.end == "block":
            self.closed.wait()

    def close(self) -> None:
        self.closed.set()


class FakeClient:
    """lists: successive (items, rv) answers (the last repeats); watches: successive scripts
    (events, end) where end is an exception, None (clean end of stream) or "block"."""

    def __init__(self, lists: list[tuple[list[dict], str]], watches: list[tuple[list, Any]]) -> None:
        self.lists = list(lists)
        self.watches = list(watches)
        self.list_calls = 0
        self.watch_rvs: list[str | None] = []
        self.all_watched = threading.Event()

    def list(self, kind: Any, namespace: Any = None, **_: Any) -> tuple[list[dict], str]:
        self.list_calls += 1
        items, rv = self.lists.pop(0) if len(self.lists) > 1 else self.lists[0]
        return [dict(i) for i in items], rv

    def watch(
        self, kind: Any, namespace: Any = None, resource_version: str | None = None, **_: Any
    ) -> FakeStream:
        self.watch_rvs.append(resource_version)
        if not self.watches:
            self.all_watched.set()
            return FakeStream([], "block")
        events, end = self.watches.pop(0)
        return FakeStream(events, end)
