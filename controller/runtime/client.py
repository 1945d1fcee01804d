"""The ``Client`` interface: CRUD + watch on plain dicts for any ResourceKind.

Why an interface (controller-runtime's ``client.Client``): reconcilers, informers, the leader
elector and the fake cloud only need these eight verbs, and with the interface the same code runs
against the REST client (``controller.runtime.rest.RestClient``) in a process and against the
in-memory ``controller.runtime.fake.FakeClient`` in unit tests. The typed errors and ResourceKind
are re-exported here because every caller of a Client needs them too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from controller.runtime.errors import (
    AlreadyExists,
    ApiError,
    Conflict,
    Gone,
    Invalid,
    NotFound,
    error_from_status,
)
from controller.runtime.kinds import ResourceKind

__all__ = [
    "AlreadyExists",
    "ApiError",
    "Client",
    "Conflict",
    "EventStream",
    "Gone",
    "Invalid",
    "NotFound",
    "ResourceKind",
    "error_from_status",
]


class EventStream(Protocol):
    """What ``watch`` returns: iterate for {"type": ADDED|MODIFIED|DELETED|BOOKMARK, "object"};
    ``close()``, from any thread, ends a blocked iteration (how informers stop)."""

    def __iter__(self) -> Iterator[dict]: ...

    def close(self) -> None: ...


class Client(Protocol):
    """The verbs every component uses; see docs/runtime-api.md for their semantics.

    Errors are the typed ``ApiError`` subclasses: NotFound, Conflict (stale resourceVersion),
    AlreadyExists, Gone (expired resourceVersion, on list/watch), Invalid.
    """

    def get(self, kind: ResourceKind, name: str, namespace: str | None = None) -> dict: ...

    def list(
        self,
        kind: ResourceKind,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        limit: int | None = None,
    ) -> tuple[list[dict], str]:
        """(items, the list's resourceVersion); items carry apiVersion and kind."""
        ...

    def create(self, kind: ResourceKind, obj: dict, namespace: str | None = None) -> dict: ...

    def update(self, kind: ResourceKind, obj: dict) -> dict:
        """PUT the whole object; its metadata.resourceVersion makes it conditional."""
        ...

    def update_status(self, kind: ResourceKind, obj: dict) -> dict:
        """PUT .../status: only the status changes (same resourceVersion rule)."""
        ...

    def patch(
        self,
        kind: ResourceKind,
        name: str,
        patch: Any,
        namespace: str | None = None,
        patch_type: str = "merge",
        subresource: str | None = None,
        field_manager: str | None = None,
        force: bool | None = None,
    ) -> dict: ...

    def delete(
        self,
        kind: ResourceKind,
        name: str,
        namespace: str | None = None,
        propagation_policy: str | None = "Background",
        preconditions: dict | None = None,
    ) -> bool:
        """True if it deleted something; False when it was already gone."""
        ...

    def watch(
        self,
        kind: ResourceKind,
        namespace: str | None = None,
        resource_version: str | None = None,
        timeout_seconds: int | None = 300,
        allow_bookmarks: bool = True,
        label_selector: str | None = None,
        field_selector: str | None = None,
        read_timeout: float | None = None,
    ) -> EventStream: ...
