"""A tiny HTTP server for /healthz, /readyz and /metrics (stdlib http.server in a thread).

Why stdlib: the probes must answer even when the rest of the process is busy, need no
framework, and must not pull an event loop into a threaded controller. Checks are plain
callables returning truthy (or raising); /readyz stays 503 until every ready check passes, which
is how the kubelet learns the caches have synced. /metrics serves prometheus_client's default
REGISTRY in the text exposition format.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

Check = Callable[[], object]


def run_checks(checks: dict[str, Check]) -> tuple[bool, str]:
    """(all passed, a per-check report like controller-runtime's verbose healthz output)."""
    ok = True
    lines = []
    for name, check in checks.items():
        try:
            passed = bool(check())
            detail = ""
        except Exception as exc:
            passed, detail = False, f": {exc}"
        ok = ok and passed
        lines.append(f"[{'+' if passed else '-'}]{name} {'ok' if passed else 'failed' + detail}")
    lines.append("healthz check passed" if ok else "healthz check failed")
    return ok, "\n".join(lines) + "\n"


class ProbeServer:
    """Serves any of /healthz, /readyz, /metrics on 127.0.0.1 or a given host; port 0 picks one."""

    def __init__(
        self,
        port: int = 0,
        host: str = "0.0.0.0",
        health_checks: dict[str, Check] | None = None,
        ready_checks: dict[str, Check] | None = None,
        serve_probes: bool = True,
        serve_metrics: bool = True,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.health_checks: dict[str, Check] = health_checks if health_checks is not None else {}
        self.ready_checks: dict[str, Check] = ready_checks if ready_checks is not None else {}
        self.serve_probes = serve_probes
        self.serve_metrics = serve_metrics
        self.registry = registry
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/") or "/"
                if server.serve_probes and path in ("/healthz", "/livez"):
                    self._checks(server.health_checks)
                elif server.serve_probes and path == "/readyz":
                    self._checks({**server.health_checks, **server.ready_checks})
                elif server.serve_metrics and path == "/metrics":
                    self._send(200, generate_latest(server.registry), CONTENT_TYPE_LATEST)
                else:
                    self._send(404, b"not found\n")

            def _checks(self, checks: dict[str, Check]) -> None:
                ok, report = run_checks(checks)
                self._send(200 if ok else 503, report.encode())

            def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("probe %s", format % args)

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def start(self) -> ProbeServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=f"probes-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()
