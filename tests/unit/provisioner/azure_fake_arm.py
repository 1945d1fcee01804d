"""A fake ARM for agent pools, plugged into the real Azure SDK at its HTTP transport.

Why at the transport: everything above it (URL building, api-version, JSON serialisation of the
AgentPool model, bearer-token policy, LRO polling with Azure-AsyncOperation, error deserialisation
into HttpResponseError) is the real SDK, so the tests check the requests we actually send and the
errors we actually get back. The fake keeps pools in a dict and walks them through ARM's states:
PUT -> 201 + an async operation that stays InProgress for ``polls`` polls, then Succeeded (or
Failed with an error); DELETE -> 202 + an operation that removes the pool when it completes.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpRequest
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import case_insensitive_dict

ARM = "https://management.azure.com"
POOLS = (
    "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService"
    "/managedClusters/{cluster}/agentPools"
)
OPERATIONS = "/subscriptions/{sub}/providers/Microsoft.ContainerService/operations/"


class FakeCredential:
    """A TokenCredential that hands out a fixed token and counts how often it was asked."""

    def __init__(self) -> None:
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        return AccessToken("fake-token", int(time.time()) + 3600)


class _Closed:
    def close(self) -> None:
        pass


class FakeResponse(HttpResponseImpl):
    """A complete, in-memory azure.core.rest.HttpResponse."""

    def __init__(
        self, request: HttpRequest, status: int, body: Any = None, headers: dict | None = None
    ) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        super().__init__(
            request=request,
            internal_response=_Closed(),
            status_code=status,
            reason="Fake",
            content_type="application/json",
            headers=case_insensitive_dict({"Content-Type": "application/json", **(headers or {})}),
            stream_download_generator=lambda **_: iter([data]),
        )
        self._content = data


@dataclass
class Recorded:
    method: str
    url: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class _Operation:
    kind: str  # "create" | "delete"
    pool: str
    polls_left: int
    error: dict | None = None


@dataclass
class FakeARM(HttpTransport):
    """The transport. Script failures with ``fail_next_put`` / ``fail_async``; inspect ``requests``."""

    subscription: str = "sub-1"
    resource_group: str = "rg-1"
    cluster: str = "aks-1"
    polls: int = 1
    frozen: bool = False  # while True every operation poll answers InProgress and nothing completes
    pools: dict[str, dict] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    _ops: dict[str, _Operation] = field(default_factory=dict)
    _next_put_error: tuple[int, dict] | None = None
    _async_error: dict | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def pools_path(self) -> str:
        return POOLS.format(sub=self.subscription, rg=self.resource_group, cluster=self.cluster)

    # --- scripting ---------------------------------------------------------------------------
    def fail_next_put(self, status: int, code: str, message: str) -> None:
        self._next_put_error = (status, {"error": {"code": code, "message": message}})

    def fail_async(self, code: str, message: str) -> None:
        """The next create's async operation ends Failed with this error (and the pool Failed)."""
        self._async_error = {"code": code, "message": message}

    def add_pool(self, name: str, state: str = "Succeeded", tags: dict | None = None, **props: Any) -> None:
        self.pools[name] = {
            "id": f"{self.pools_path}/{name}",
            "name": name,
            "type": "Microsoft.ContainerService/managedClusters/agentPools",
            "properties": {"provisioningState": state, "count": 1, "tags": tags or {}, **props},
        }

    def of(self, method: str, path_suffix: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.endswith(path_suffix)]

    # --- HttpTransport -----------------------------------------------------------------------
    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __exit__(self, *args: Any) -> None:
        pass

    def send(self, request: HttpRequest, **kwargs: Any) -> FakeResponse:  # type: ignore[override]
        parsed = urlparse(request.url)
        raw = request.content
        body = json.loads(raw) if raw else None
        rec = Recorded(
            request.method, request.url, parsed.path, parse_qs(parsed.query), dict(request.headers), body
        )
        with self._lock:
            self.requests.append(rec)
            status, payload, headers = self._route(rec)
        return FakeResponse(request, status, payload, headers)

    def _route(self, rec: Recorded) -> tuple[int, Any, dict]:
        if rec.path.startswith(
            f"/subscriptions/{self.subscription}/providers/Microsoft.ContainerService/operations/"
        ):
            return self._poll(rec.path.rsplit("/", 1)[1])
        if not rec.path.startswith(self.pools_path):
            return 404, {"error": {"code": "ResourceGroupNotFound", "message": rec.path}}, {}
        rest = rec.path[len(self.pools_path) :].strip("/")
        if not rest:
            return 200, {"value": list(self.pools.values())}, {}
        name = rest
        if rec.method == "GET":
            pool = self.pools.get(name)
            if pool is None:
                return 404, {"error": {"code": "NotFound", "message": f"agent pool {name} not found"}}, {}
            return 200, pool, {}
        if rec.method == "PUT":
            if self._next_put_error is not None:
                status, err = self._next_put_error
                self._next_put_error = None
                return status, err, {}
            props = dict(rec.body["properties"])
            props["provisioningState"] = "Creating"
            self.pools[name] = {
                "id": f"{self.pools_path}/{name}",
                "name": name,
                "type": "Microsoft.ContainerService/managedClusters/agentPools",
                "properties": props,
            }
            op = self._start("create", name, self._async_error)
            self._async_error = None
            return 201, self.pools[name], {"Azure-AsyncOperation": op, "Retry-After": "0"}
        if rec.method == "DELETE":
            if name not in self.pools:
                return 204, None, {}
            self.pools[name]["properties"]["provisioningState"] = "Deleting"
            op = self._start("delete", name, None)
            return 202, None, {"Azure-AsyncOperation": op, "Location": op, "Retry-After": "0"}
        return 405, {"error": {"code": "MethodNotAllowed", "message": rec.method}}, {}

    def _start(self, kind: str, pool: str, error: dict | None) -> str:
        op_id = uuid.uuid4().hex
        self._ops[op_id] = _Operation(kind, pool, self.polls, error)
        return f"{ARM}{OPERATIONS.format(sub=self.subscription)}{op_id}?api-version=2026-08-01"

    def _poll(self, op_id: str) -> tuple[int, Any, dict]:
        op = self._ops[op_id]
        if self.frozen:
            return 200, {"name": op_id, "status": "InProgress"}, {"Retry-After": "0"}
        if op.polls_left > 0:
            op.polls_left -= 1
            return 200, {"name": op_id, "status": "InProgress"}, {"Retry-After": "0"}
        pool = self.pools.get(op.pool)
        if op.kind == "delete":
            self.pools.pop(op.pool, None)
            return 200, {"name": op_id, "status": "Succeeded"}, {}
        if op.error is not None:
            if pool is not None:
                pool["properties"]["provisioningState"] = "Failed"
                pool["properties"]["status"] = {"provisioningError": op.error}
            return 200, {"name": op_id, "status": "Failed", "error": op.error}, {}
        if pool is not None:
            pool["properties"]["provisioningState"] = "Succeeded"
        return 200, {"name": op_id, "status": "Succeeded"}, {}
