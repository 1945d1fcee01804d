"""The REST Client: typed access to any Kubernetes kind through the official `kubernetes` package.

Why not the generated per-kind API classes: they exist only for built-in kinds, deserialize into
model objects we would immediately turn back into dicts, and hide the HTTP status we need for
optimistic concurrency. Going through ``ApiClient.call_api`` with ``_preload_content=False`` keeps
the official client's config, auth (token, exec plugins, client certs), TLS and proxy handling,
while paths are built from a ResourceKind so core kinds and every CRD work the same way.

Errors become the typed exceptions of ``controller.runtime.errors`` so callers can branch on
meaning: NotFound (404), Conflict (409 stale resourceVersion), AlreadyExists (409 on create), Gone
(410 expired resourceVersion).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from controller.runtime.errors import ApiError, NotFound, error_from_status
from controller.runtime.kinds import ResourceKind

log = logging.getLogger(__name__)

PATCH_CONTENT_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}


# --- errors from responses --------------------------------------------------------------------------
def _error_from_body(status: int, http_reason: str, raw: bytes | str | None) -> ApiError:
    """Decode a Status body (if it is one) into a typed ApiError."""
    body: Any = {}
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if raw:
        with contextlib.suppress(ValueError, TypeError):
            body = json.loads(raw)
    if not isinstance(body, dict):
        body = {}
    return error_from_status(
        int(status or 0), body.get("reason") or http_reason, body.get("message") or str(raw or ""), body
    )


def _from_api_exception(exc: ApiException) -> ApiError:
    return _error_from_body(int(exc.status or 0), str(exc.reason or ""), exc.body)


# --- watch stream -----------------------------------------------------------------------------------
class WatchStream:
    """An iterator of watch events ({"type", "object"}) read line by line from a streamed response.

    close() may be called from another thread to abort a blocked read (how informers stop).
    A server-side ERROR event carrying a Status with code 410 raises Gone; other ERROR events raise
    ApiError. The iterator ends when the server closes the stream (timeoutSeconds elapsed).
    """

    def __init__(self, response: Any) -> None:
        self._resp = response
        self._closed = False

    def __iter__(self) -> Iterator[dict]:
        buf = b""
        try:
            for chunk in self._resp.stream(amt=None, decode_content=True):
                if self._closed:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield self._decode(line)
            if buf.strip() and not self._closed:
                yield self._decode(buf)
        finally:
            self.close()

    @staticmethod
    def _decode(line: bytes) -> dict:
        event = json.loads(line)
        if event.get("type") == "ERROR":
            status = event.get("object") or {}
            raise error_from_status(
                int(status.get("code") or 500), status.get("reason", ""), status.get("message", ""), status
            )
        return event

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        resp = self._resp
        with contextlib.suppress(Exception):
            if hasattr(resp, "shutdown"):
                resp.shutdown()  # urllib3 >= 2.3: unblocks a read in another thread
        with contextlib.suppress(Exception):
            resp.close()
        with contextlib.suppress(Exception):
            resp.release_conn()


# --- client -----------------------------------------------------------------------------------------
class RestClient:
    """CRUD + watch on plain dicts for any ResourceKind, over HTTP (implements ``Client``)."""

    def __init__(self, api_client: kubernetes.client.ApiClient, request_timeout: float = 30.0) -> None:
        self.api_client = api_client
        self.request_timeout = request_timeout

    @classmethod
    def from_kubeconfig(
        cls, path: str | None = None, context: str | None = None, pool_maxsize: int = 32
    ) -> RestClient:
        """From a kubeconfig file (path, else $KUBECONFIG / ~/.kube/config), else in-cluster config.

        pool_maxsize: every informer pins one connection for its watch, and workers share the rest;
        the official default (5 x CPUs) is small on small machines and makes urllib3 discard and
        re-open connections.
        """
        from kubernetes import config

        conf = kubernetes.client.Configuration()
        try:
            config.load_kube_config(config_file=path, context=context, client_configuration=conf)
        except config.ConfigException:
            if path is not None:
                raise
            conf = kubernetes.client.Configuration()
            config.load_incluster_config(client_configuration=conf)
        conf.connection_pool_maxsize = max(conf.connection_pool_maxsize or 0, pool_maxsize)
        return cls(kubernetes.client.ApiClient(conf))

    def close(self) -> None:
        self.api_client.close()

    # --- raw request ------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        query: list[tuple[str, Any]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | tuple[float, float] | None = None,
        stream: bool = False,
    ) -> Any:
        """One HTTP call; returns the decoded JSON body, or the raw streaming response if stream."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        api = self.api_client
        try:
            # kubernetes>=35 (openapi-generator "python" flavour): param_serialize + call_api; the
            # REST layer never preloads, so .response is the raw urllib3 response we can stream.
            method, url, headers, body, post_params = api.param_serialize(
                method,
                path,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            rest_resp = api.call_api(
                method,
                url,
                header_params=headers,
                body=body,
                post_params=post_params,
                _request_timeout=timeout if timeout is not None else self.request_timeout,
            )
        except ApiException as exc:
            raise _from_api_exception(exc) from None
        raw = getattr(rest_resp, "response", rest_resp)
        if not 200 <= rest_resp.status <= 299:
            try:
                data = raw.data
            finally:
                with contextlib.suppress(Exception):
                    raw.release_conn()
            raise _error_from_body(rest_resp.status, str(rest_resp.reason or ""), data)
        if stream:
            return raw
        try:
            data = raw.data
        finally:
            with contextlib.suppress(Exception):
                raw.release_conn()
        return json.loads(data) if data else {}

    # --- CRUD -------------------------------------------------------------------------------
    def get(self, kind: ResourceKind, name: str, namespace: str | None = None) -> dict:
        return self.request("GET", kind.path(namespace, name))

    def list(
        self,
        kind: ResourceKind,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        limit: int | None = None,
    ) -> tuple[list[dict], str]:
        """All items (following `continue` pages) and the list's resourceVersion.

        Items get apiVersion/kind filled in (the API server omits them inside lists) so handlers and
        owner references can rely on them.
        """
        query: list[tuple[str, Any]] = []
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        if resource_version is not None:
            query.append(("resourceVersion", resource_version))
        if limit:
            query.append(("limit", limit))
        items: list[dict] = []
        cont: str | None = None
        while True:
            page_query = [*query, ("continue", cont)] if cont else query
            data = self.request("GET", kind.path(namespace), page_query)
            for item in data.get("items") or []:
                item.setdefault("apiVersion", kind.api_version)
                item.setdefault("kind", kind.kind)
                items.append(item)
            meta = data.get("metadata") or {}
            cont = meta.get("continue")
            if not cont:
                return items, meta.get("resourceVersion", "")

    def create(self, kind: ResourceKind, obj: dict, namespace: str | None = None) -> dict:
        namespace = namespace or (obj.get("metadata") or {}).get("namespace")
        body = {"apiVersion": kind.api_version, "kind": kind.kind, **obj}
        return self.request("POST", kind.path(namespace), body=body)

    def update(self, kind: ResourceKind, obj: dict) -> dict:
        """PUT the whole object; metadata.resourceVersion makes it conditional (Conflict if stale)."""
        meta = obj["metadata"]
        body = {"apiVersion": kind.api_version, "kind": kind.kind, **obj}
        return self.request("PUT", kind.path(meta.get("namespace"), meta["name"]), body=body)

    def update_status(self, kind: ResourceKind, obj: dict) -> dict:
        """PUT .../status: only the status subresource changes (same resourceVersion rule)."""
        meta = obj["metadata"]
        body = {"apiVersion": kind.api_version, "kind": kind.kind, **obj}
        return self.request("PUT", kind.path(meta.get("namespace"), meta["name"], "status"), body=body)

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
    ) -> dict:
        """merge (RFC 7386), json (RFC 6902 list), strategic (built-in kinds only) or apply (SSA)."""
        try:
            content_type = PATCH_CONTENT_TYPES[patch_type]
        except KeyError:
            raise ValueError(f"unknown patch_type {patch_type!r}") from None
        query: list[tuple[str, Any]] = []
        if field_manager:
            query.append(("fieldManager", field_manager))
        if force is not None:
            query.append(("force", "true" if force else "false"))
        return self.request(
            "PATCH", kind.path(namespace, name, subresource), query, body=patch, content_type=content_type
        )

    def delete(
        self,
        kind: ResourceKind,
        name: str,
        namespace: str | None = None,
        propagation_policy: str | None = "Background",
        preconditions: dict | None = None,
    ) -> bool:
        """Delete; False when it was already gone (deleting is idempotent for reconcilers)."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if propagation_policy:
            body["propagationPolicy"] = propagation_policy
        if preconditions:
            body["preconditions"] = preconditions
        try:
            self.request("DELETE", kind.path(namespace, name), body=body)
        except NotFound:
            return False
        return True

    # --- watch ------------------------------------------------------------------------------
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
    ) -> WatchStream:
        """Open a watch; iterate the result for {"type": ADDED|MODIFIED|DELETED|BOOKMARK, "object"}.

        The server ends the stream after timeoutSeconds; the socket read timeout defaults to a little
        more than that so a dead connection is noticed. Raises Gone (immediately or while iterating)
        when resource_version is too old.
        """
        query: list[tuple[str, Any]] = [("watch", "true")]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        if timeout_seconds:
            query.append(("timeoutSeconds", int(timeout_seconds)))
        if allow_bookmarks:
            query.append(("allowWatchBookmarks", "true"))
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        if read_timeout is None:
            read_timeout = (timeout_seconds or 300) + 30.0
        resp = self.request(
            "GET", kind.path(namespace), query, timeout=(self.request_timeout, read_timeout), stream=True
        )
        return WatchStream(resp)
