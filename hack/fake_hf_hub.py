"""A local server that speaks the part of the Hugging Face Hub API that huggingface_hub and
transformers use, serving repos from directories.

Why: there is no network here (and tests must not depend on one), yet an uncatalogued model id
goes through the real code paths: the controller reads its ``config.json`` and safetensors headers
through the hub API, and the serve replica downloads it with ``snapshot_download`` /
``from_pretrained``. Point ``HF_ENDPOINT`` at ``FakeHub.url`` and the real clients work against
it. Any directory with a checkpoint (hack/tiny_model.py's, say) can be served under any repo id.

What it speaks (read from huggingface_hub 2.4's ``hf_api.py``, ``file_download.py``,
``_snapshot_download.py`` and ``utils/_http.py``'s ``hf_raise_for_status``):

- ``GET /api/models/{id}`` and ``/api/models/{id}/revision/{rev}``: ``id``, ``sha``, ``siblings``,
  ``gated`` (model_info, repo_info; info is public for a gated repo, as on the Hub);
- ``GET /api/models/{id}/tree/{rev}``: the file list ``snapshot_download`` downloads;
- ``HEAD``/``GET /{id}/resolve/{rev}/{file}``: the file, with ``X-Repo-Commit``, ``ETag`` and
  ``X-Linked-Etag`` (the sha256, which names the cache blob), ``Content-Length``, and ``Range``
  (206 ``Content-Range``: how ``get_safetensors_metadata`` reads a header without the weights);
- errors as ``X-Error-Code``: ``RepoNotFound`` (404), ``RevisionNotFound`` (404),
  ``EntryNotFound`` (404), ``GatedRepo`` (401 without a token, 403 with a wrong one).

It counts the body bytes it sends per repo and per file (``bytes_served``), so a test can tell a
cold download from a cache hit. Standard library only: usable from tests, the demo and by hand.

CLI: ``python -m hack.fake_hf_hub --repo ORG/NAME=DIR [--gated ORG/NAME=DIR:TOKEN] [--port 0]``
(e.g. ``--repo kaito-test/tiny-phi-3-uncatalogued=~/.cache/kaito-py/models/tiny-phi-3``) prints its
URL and serves until interrupted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

DEFAULT_REVISION = "main"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class HubRepo:
    """One repo: a directory whose files (not its dotfiles) are the repo's, and who may read them."""

    repo_id: str
    root: Path
    token: str | None = None  # a gated repo: files need ``Authorization: Bearer <token>``
    # the commit the repo's main points at: a catalog preset's pinned revision (presets/catalog.yaml),
    # so a stand-in is served at the commit the serve pods ask for; None: one derived from the files
    commit: str | None = None
    _etags: dict[str, str] = field(default_factory=dict, repr=False)

    def files(self) -> list[str]:
        return sorted(
            str(p.relative_to(self.root)) for p in self.root.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(self.root).parts)
        )

    def etag(self, name: str) -> str:
        """The file's sha256 (as the Hub's X-Linked-Etag of an LFS file), computed once."""
        if name not in self._etags:
            digest = hashlib.sha256()
            with (self.root / name).open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            self._etags[name] = digest.hexdigest()
        return self._etags[name]

    @property
    def sha(self) -> str:
        """A 40-hex commit id that changes when any file does (huggingface_hub wants a commit hash)."""
        if self.commit:
            return self.commit
        listing = "\n".join(f"{n}:{(self.root / n).stat().st_size}:{(self.root / n).stat().st_mtime_ns}"
                            for n in self.files())
        return hashlib.sha1(f"{self.repo_id}\n{listing}".encode()).hexdigest()

    def info(self) -> dict:
        return {
            "id": self.repo_id, "modelId": self.repo_id, "sha": self.sha, "private": False,
            "gated": "manual" if self.token else False, "disabled": False,
            "siblings": [{"rfilename": n} for n in self.files()],
            "tags": [], "downloads": 0, "likes": 0,
        }

    def tree(self) -> list[dict]:
        return [{"type": "file", "path": n, "size": (self.root / n).stat().st_size,
                 "oid": hashlib.sha1(self.etag(n).encode()).hexdigest()} for n in self.files()]


class FakeHub:
    """The server (a thread of this process); use as a context manager or ``start()``/``stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.repos: dict[str, HubRepo] = {}
        self._served: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []  # (method, path), for tests that look at traffic
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- repos --------------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, root: str | Path, *, token: str | None = None,
                 commit: str | None = None) -> HubRepo:
        """Serve ``root``'s files as ``repo_id`` (``token``: a gated repo that needs it; ``commit``:
        the 40-hex commit its main is at, e.g. a pinned preset's revision)."""
        if commit is not None and not re.fullmatch(r"[0-9a-f]{40}", commit):
            raise ValueError(f"commit must be 40 lowercase hex digits, not {commit!r}")
        repo = HubRepo(repo_id, Path(root).expanduser().resolve(), token, commit)
        if not repo.root.is_dir():
            raise FileNotFoundError(f"{root} is not a directory")
        self.repos[repo_id.lower()] = repo
        return repo

    def bytes_served(self, repo_id: str, filename: str | None = None) -> int:
        """Body bytes sent for ``repo_id`` (GETs of its files), or for one of its files."""
        with self._lock:
            return sum(n for (r, f), n in self._served.items()
                       if r == repo_id.lower() and (filename is None or f == filename))

    def _count(self, repo: HubRepo, filename: str, n: int) -> None:
        with self._lock:
            self._served[(repo.repo_id.lower(), filename)] += n

    # --- lifecycle ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hf-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class _Error(Exception):
    def __init__(self, status: int, code: str, message: str, commit: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet: tests read the counters
        pass

    def do_GET(self) -> None:
        self._route(body=True)

    def do_HEAD(self) -> None:
        self._route(body=False)

    def _route(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.hub.requests.append((self.command, path))
        try:
            if path.startswith("/api/models/"):
                self._api(path.removeprefix("/api/models/"), body)
            elif "/resolve/" in path:
                self._resolve(path.lstrip("/"), body)
            else:
                raise _Error(404, "", f"no route {path}")
        except _Error as err:
            headers = {"X-Error-Code": err.code, "X-Error-Message": err.message} if err.code else {}
            if err.commit:
                headers["X-Repo-Commit"] = err.commit
            self._send_json(err.status, {"error": err.message}, body, headers)

    # --- /api/models/{id}[/revision/{rev} | /tree/{rev}[/path]] ------------------------------------
    def _api(self, rest: str, body: bool) -> None:
        for marker in ("/revision/", "/tree/"):
            if marker in rest:
                repo_id, rev = rest.split(marker, 1)
                repo = self._repo(repo_id)
                self._check_revision(repo, rev.split("/", 1)[0])
                payload = repo.info() if marker == "/revision/" else repo.tree()
                return self._send_json(200, payload, body)
        self._send_json(200, self._repo(rest).info(), body)

    # --- /{id}/resolve/{rev}/{file} ----------------------------------------------------------------
    def _resolve(self, rest: str, body: bool) -> None:
        repo_id, tail = rest.split("/resolve/", 1)
        rev, _, filename = tail.partition("/")
        repo = self._repo(repo_id)
        self._check_revision(repo, rev)
        if repo.token is not None:
            given = self.headers.get("Authorization", "")
            if not given:
                raise _Error(401, "GatedRepo", f"Access to model {repo.repo_id} is restricted. You must "
                             "have access to it and be authenticated to access it. Please log in.")
            if given != f"Bearer {repo.token}":
                raise _Error(403, "GatedRepo", f"Access to model {repo.repo_id} is restricted and you "
                             "are not in the authorized list.")
        target = repo.root / filename
        if not filename or filename not in repo.files():
            # with the commit, as the Hub sends it: huggingface_hub then caches "absent at this
            # commit" (.no_exist) and does not ask again for a pinned revision
            raise _Error(404, "EntryNotFound", f"{filename} does not exist on {rev}", commit=repo.sha)
        size = target.stat().st_size
        start, end = 0, size - 1
        status = 200
        if (wanted := self.headers.get("Range")) and (m := _RANGE.match(wanted.strip())):
            first, last = m.groups()
            if first:
                start, end = int(first), min(int(last), size - 1) if last else size - 1
            elif last:  # the last N bytes
                start = max(0, size - int(last))
            status = 206
        length = max(0, end - start + 1)
        etag = repo.etag(filename)
        self.send_response(status)
        self.send_header("X-Repo-Commit", repo.sha)
        self.send_header("ETag", f'"{etag}"')
        self.send_header("X-Linked-Etag", f'"{etag}"')
        self.send_header("X-Linked-Size", str(size))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if body:  # counted before it is sent: a client that read the body sees it counted
            self.hub._count(repo, filename, length)
            self._send_file(target, start, length)

    def _send_file(self, target: Path, start: int, length: int) -> None:
        with target.open("rb") as f:
            f.seek(start)
            left = length
            while left > 0:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)

    # --- helpers ------------------------------------------------------------------------------------
    def _repo(self, repo_id: str) -> HubRepo:
        repo = self.hub.repos.get(repo_id.strip("/").lower())
        if repo is None:
            raise _Error(404, "RepoNotFound", f"Repository {repo_id} not found")
        return repo

    def _check_revision(self, repo: HubRepo, rev: str) -> None:
        if rev not in (DEFAULT_REVISION, repo.sha):
            raise _Error(404, "RevisionNotFound", f"Invalid rev id: {rev}")

    def _send_json(self, status: int, payload: object, body: bool,
                   headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


def _parse_repo(text: str) -> tuple[str, str, str | None]:
    repo_id, _, rest = text.partition("=")
    root, _, token = rest.partition(":")
    if not repo_id or not root:
        raise argparse.ArgumentTypeError(f"{text!r}: expected ORG/NAME=DIR")
    return repo_id, root, token or None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", action="append", default=[], type=_parse_repo, help="ORG/NAME=DIR (repeatable)")
    p.add_argument("--gated", action="append", default=[], type=_parse_repo, help="ORG/NAME=DIR:TOKEN")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    hub = FakeHub(args.host, args.port)
    for repo_id, root, token in [*args.repo, *args.gated]:
        hub.add_repo(repo_id, root, token=token)
    hub.start()
    print(json.dumps({"url": hub.url, "repos": sorted(r.repo_id for r in hub.repos.values())}), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
