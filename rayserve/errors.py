"""The error a caller can act on, shared by the request schemas, the service and the ingress.

Why its own module: the schemas (which know each dialect's fields), the service (routing, the
context window, engine back-pressure) and the ingress (which turns it into an HTTP answer and
a metric) all raise or read this one error, and none should import another just for it.
"""

from __future__ import annotations


class RequestError(Exception):
    """A problem the caller can fix (or retry): becomes an HTTP 4xx/5xx with this message."""

    def __init__(
        self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param


def clip(text: str, limit: int = 100) -> str:
    """A caller's string as quoted back in an error: a 1 MB name must not make a 1 MB answer."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
