"""The timeline's first request: where it goes, and what counts as answered (a real local HTTP server)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from controller.workspace import probe
from hack.kuberay_standin.controller import serve_endpoint


@pytest.fixture
def server() -> Iterator[tuple[str, list[int]]]:
    codes: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            code = codes.pop(0)
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", codes
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_2xx_and_the_replicas_401_are_answers_5xx_is_not(server: tuple[str, list[int]]) -> None:
    url, codes = server
    codes += [200, 401, 503]
    assert probe.answered(url, "m") is True
    assert probe.answered(url, "m") is True  # API key required: the replica answered
    assert probe.answered(url, "m") is False


def test_a_refused_connection_is_not_an_answer() -> None:
    assert probe.answered("http://127.0.0.1:9", "m", timeout=1.0) is False


def test_status_endpoint_reads_kuberays_fields_as_the_standin_does() -> None:
    rs = {"metadata": {"name": "ws", "namespace": "ns"}, "status": {"activeServiceStatus": {
        "rayClusterStatus": {"head": {"serviceIP": "127.0.0.1"}, "endpoints": {"serve": "8000"}}}}}
    assert probe.endpoint("rayservice-status", "ws", "ns", rs) == "http://127.0.0.1:8000/ns/ws"
    assert serve_endpoint(rs) == probe.status_endpoint(rs)
    assert probe.endpoint("rayservice-status", "ws", "ns", {"metadata": rs["metadata"]}) is None
    assert probe.endpoint("service", "ws", "ns", None) == "http://ws.ns.svc:80"
    assert probe.endpoint("off", "ws", "ns", rs) is None
