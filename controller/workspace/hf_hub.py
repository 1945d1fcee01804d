"""The three reads of the Hugging Face Hub API the controller makes to size an uncatalogued model:
the repo's info (files, commit), its ``config.json``, and the headers of its safetensors files.

Why not huggingface_hub: the operator image carries the base dependencies only (pyproject.toml),
and these are three plain HTTP calls. They follow huggingface_hub 2.4 exactly where it matters:
``HF_ENDPOINT``'s layout (``/api/models/{id}/revision/{rev}``, ``/{id}/resolve/{rev}/{file}``),
``Authorization: Bearer <token>``, the errors of ``hf_raise_for_status`` (``X-Error-Code``
RepoNotFound / EntryNotFound / GatedRepo / RevisionNotFound; a 401 on a repo is "not found or not
yours"), and ``get_safetensors_metadata``'s way of reading a header: a ``Range`` GET of the first
100 kB, then the rest of the header if it is longer. tests/unit/workspace/test_workspace_model_resolver.py
checks the parameter count it reads against huggingface_hub's own, over hack/fake_hf_hub.py.

Every call has a timeout: a reconcile worker must never hang on the network.
"""

from __future__ import annotations

import json
import struct
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import quote

DEFAULT_ENDPOINT = "https://huggingface.co"
HEADER_PROBE = 100_000  # bytes huggingface_hub reads first; most headers fit
MAX_HEADER = 100 << 20  # a header larger than this is not a checkpoint we will size
MAX_SHARDS = 512


class HubError(Exception):
    """A read failed; ``code`` is the hub's X-Error-Code (or what stands in for one)."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code, self.status = code, status


REPO_NOT_FOUND = "RepoNotFound"
ENTRY_NOT_FOUND = "EntryNotFound"
GATED = "GatedRepo"
REVISION_NOT_FOUND = "RevisionNotFound"
UNREACHABLE = "Unreachable"  # no answer, a timeout, a 5xx: worth trying again


@dataclass(frozen=True)
class RepoInfo:
    repo_id: str
    sha: str
    files: tuple[str, ...]
    gated: bool


class HubClient:
    """Reads from one hub endpoint (``HF_ENDPOINT``), ``timeout`` seconds per request."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, timeout: float = 10.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout

    def repo_info(self, repo_id: str, token: str | None, revision: str = "main") -> RepoInfo:
        url = f"{self.endpoint}/api/models/{repo_id}/revision/{quote(revision, safe='')}"
        data = json.loads(self._get(url, token))
        files = tuple(s["rfilename"] for s in data.get("siblings") or [] if "rfilename" in s)
        return RepoInfo(repo_id, str(data.get("sha") or revision), files, bool(data.get("gated")))

    def json_file(self, repo_id: str, revision: str, filename: str, token: str | None) -> dict:
        raw = self._get(self._resolve_url(repo_id, revision, filename), token)
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise HubError("InvalidFile", f"{repo_id}/{filename} is not JSON: {exc}") from None

    def safetensors_header(self, repo_id: str, revision: str, filename: str, token: str | None) -> dict:
        """A safetensors file's JSON header, without its tensors (one or two Range reads)."""
        url = self._resolve_url(repo_id, revision, filename)
        first = self._get(url, token, byte_range=(0, HEADER_PROBE))
        if len(first) < 8:
            raise HubError("InvalidFile", f"{repo_id}/{filename} is shorter than a safetensors header")
        (size,) = struct.unpack("<Q", first[:8])
        if size > MAX_HEADER:
            raise HubError("InvalidFile", f"{repo_id}/{filename}: a {size}-byte safetensors header")
        fits = size <= len(first) - 8
        raw = first[8: 8 + size] if fits else self._get(url, token, byte_range=(8, size + 7))
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise HubError("InvalidFile", f"{repo_id}/{filename}: bad safetensors header: {exc}") from None

    def safetensors_headers(self, info: RepoInfo, token: str | None) -> list[dict]:
        """The headers of every safetensors file the checkpoint uses (the index's shards, or the one
        file); [] when it has none."""
        if "model.safetensors.index.json" in info.files:
            index = self.json_file(info.repo_id, info.sha, "model.safetensors.index.json", token)
            shards = sorted(set((index.get("weight_map") or {}).values()))[:MAX_SHARDS]
        elif "model.safetensors" in info.files:
            shards = ["model.safetensors"]
        else:
            return []
        return [self.safetensors_header(info.repo_id, info.sha, s, token) for s in shards]

    # --- HTTP -------------------------------------------------------------------------------------
    def _resolve_url(self, repo_id: str, revision: str, filename: str) -> str:
        return f"{self.endpoint}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(filename)}"

    def _get(self, url: str, token: str | None, byte_range: tuple[int, int] | None = None) -> bytes:
        headers = {"User-Agent": "kaito-py-controller", "Accept-Encoding": "identity"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if byte_range is not None:
            headers["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                return resp.read(MAX_HEADER + HEADER_PROBE)
        except urllib.error.HTTPError as exc:
            raise _http_error(exc, url, bool(token)) from None
        except (OSError, ValueError) as exc:  # refused, DNS, timeout, TLS
            raise HubError(UNREACHABLE, f"{url}: {exc}") from None


def _http_error(exc: urllib.error.HTTPError, url: str, with_token: bool) -> HubError:
    """The error as huggingface_hub's hf_raise_for_status names it."""
    code = exc.headers.get("X-Error-Code") or ""
    message = exc.headers.get("X-Error-Message") or exc.reason
    if code in (GATED, ENTRY_NOT_FOUND, REVISION_NOT_FOUND, REPO_NOT_FOUND):
        return HubError(code, f"{exc.code} {message}", exc.code)
    if exc.code == 401 and "/api/models/" in url:  # the Hub's answer for a missing or private repo
        return HubError(REPO_NOT_FOUND, f"401 {message}", 401)
    if exc.code in (401, 403):
        given = "" if with_token else " (no token given)"
        return HubError(GATED, f"{exc.code} {message}{given}", exc.code)
    if exc.code == 404:
        return HubError(REPO_NOT_FOUND, f"404 {message}", 404)
    return HubError(UNREACHABLE, f"{exc.code} {message} from {url}", exc.code)
