"""A Ray head that dies at start-up (a port taken between our pick and its bind) is started again
on fresh ports; one that keeps dying fails with its output. A fake ``ray`` CLI stands in: it
exits like a raylet that lost its port a given number of times, then serves the dashboard's
Serve API on the port it was given until it is signalled, as ``ray start --block`` does."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hack.kuberay_standin import ray_head
from hack.kuberay_standin.ray_head import RayHead

FAKE_RAY = """\
import http.server, pathlib, sys
args = dict(a.split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
count = pathlib.Path({count!r})
n = int(count.read_text() or 0) + 1 if count.exists() else 1
count.write_text(str(n))
with open({ports!r}, "a") as f:
    f.write(args["--dashboard-port"] + " " + args["--metrics-export-port"] + "\\n")
if n <= {failures}:
    print("[raylet] Failed to start the grpc server. The specified port is 44227. "
          "bind: Address already in use", flush=True)
    sys.exit(1)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"{{}}")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(args["--dashboard-port"])), H).serve_forever()
"""


def _fake_ray(tmp_path: Path, failures: int) -> Path:
    script = tmp_path / "fake_ray.py"
    script.write_text(
        FAKE_RAY.format(count=str(tmp_path / "count"), ports=str(tmp_path / "ports"), failures=failures)
    )
    exe = tmp_path / "ray"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {script} \"$@\"\n")
    exe.chmod(0o755)
    return exe


def _head(tmp_path: Path) -> RayHead:
    return RayHead(token_auth=False, temp_dir=str(tmp_path / "session"), startup_timeout=30)


def test_head_that_loses_a_port_at_start_up_starts_again_on_fresh_ports(tmp_path, monkeypatch):
    monkeypatch.setattr(ray_head, "ray_binary", lambda: str(_fake_ray(tmp_path, failures=2)))
    head = _head(tmp_path)
    try:
        head.start()
        assert head.running and (tmp_path / "count").read_text() == "3"
        tried = (tmp_path / "ports").read_text().split("\n")[:3]
        assert len(set(tried)) == 3, tried  # each start got its own dashboard and metrics ports
        assert head.dashboard_url.endswith(":" + tried[-1].split()[0])
        assert head.metrics_port == int(tried[-1].split()[1])
    finally:
        head.stop(grace=5)
    assert not head.running


def test_head_that_keeps_dying_fails_with_its_output(tmp_path, monkeypatch):
    monkeypatch.setattr(ray_head, "ray_binary", lambda: str(_fake_ray(tmp_path, failures=99)))
    head = _head(tmp_path)
    with pytest.raises(RuntimeError, match="Address already in use") as err:
        head.start()
    assert (tmp_path / "count").read_text() == str(ray_head.START_RETRIES + 1)
    assert "ray start exited (1)" in str(err.value)
    assert head.proc is None
