"""The optional API key of the serving endpoints (``/chat`` and ``/v1``), as vLLM's ``--api-key``.

Why here, checked before anything else: an unauthenticated request must cost nothing (no body
read, no tokenizing, no queue slot), and a key that was asked for but is missing must not turn
into an open endpoint. So the key's presence is decided by the serve config (``ServeArgs.
api_key_env`` names the environment variable that holds it, filled from a Secret the Workspace
names), and a replica whose variable is empty refuses to start rather than serve without it.
The comparison is constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hmac
import os

from rayserve.errors import RequestError

__all__ = ["ApiKeyCheck", "MissingApiKey"]


class MissingApiKey(RuntimeError):
    """The serve config asks for an API key and its environment variable is empty."""


class ApiKeyCheck:
    """``check(Authorization header)``: passes, or raises a 401 ``RequestError``."""

    def __init__(self, key: str | None) -> None:
        self._key = key.encode() if key else None

    @classmethod
    def from_env(cls, name: str | None) -> ApiKeyCheck:
        """No key when ``name`` is None; else the variable's value, which must be non-empty."""
        if name is None:
            return cls(None)
        key = os.environ.get(name, "").strip()
        if not key:
            raise MissingApiKey(f"the serve config requires an API key in ${name}, which is empty: "
                                "refusing to serve the endpoints without it")
        return cls(key)

    @property
    def required(self) -> bool:
        return self._key is not None

    def check(self, authorization: str | None) -> None:
        if self._key is None:
            return
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._key):
            raise RequestError(401, "a valid API key is required: send 'Authorization: Bearer <key>'",
                               kind="authentication_error")
