"""The typed errors of the Kubernetes API, so callers branch on meaning rather than on HTTP codes.

Why apart from the REST client: every Client (the REST one, the in-memory fake) raises the same
ones, and reconcilers catch them without importing either.
"""

from __future__ import annotations


class ApiError(Exception):
    """An API server error response: HTTP status, the Status reason (e.g. "Conflict"), message."""

    def __init__(self, status: int, reason: str = "", message: str = "", body: dict | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body or {}


class NotFound(ApiError):
    """404: the object (or its namespace, or the kind) does not exist."""


class Conflict(ApiError):
    """409 Conflict: the update carried a stale metadata.resourceVersion; re-read and retry."""


class AlreadyExists(ApiError):
    """409 AlreadyExists: create of a name that is taken."""


class Gone(ApiError):
    """410: the resourceVersion is older than etcd's compaction window; relist."""


class Invalid(ApiError):
    """422: the object failed validation (schema, CEL, immutable field)."""


def error_from_status(status: int, reason: str = "", message: str = "", body: dict | None = None) -> ApiError:
    """Map an HTTP status + Status reason to the most specific ApiError subclass."""
    if status == 404:
        return NotFound(status, reason, message, body)
    if status == 409:
        cls = AlreadyExists if reason == "AlreadyExists" else Conflict
        return cls(status, reason, message, body)
    if status == 410 or reason in ("Expired", "Gone"):
        return Gone(status, reason, message, body)
    if status == 422:
        return Invalid(status, reason, message, body)
    return ApiError(status, reason, message, body)
