"""``kaito-kuberay-standin`` as the demo runs it: a real process that starts its own Ray head
(with Ray's token auth, the token from its environment), reports readiness, serves a RayService,
and on SIGTERM stops that head and nothing else."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from standin_helpers import HERE, echo_serve_config, http_get_json, rayservice, wait_for, wait_ready

from controller.api.kinds import RAYSERVICES
from hack.kuberay_standin import ray_auth
from hack.kuberay_standin.controller import serve_endpoint
from hack.ports import free_port
from hack.procs import ManagedProcess

pytestmark = [pytest.mark.integration, pytest.mark.serve]
TOKEN = ray_auth.generate_token()


def _processes_mentioning(text: str) -> list[str]:
    out = subprocess.run(
        ["ps", "-e", "-ww", "-o", "pid,args"], capture_output=True, text=True, check=True
    ).stdout
    return [line for line in out.splitlines() if text in line]


def _haproxies() -> list[str]:
    return [line for line in _processes_mentioning("haproxy") if "/tmp/hap-" in line and " -f " in line]


@pytest.mark.parametrize("haproxy", [False, True], ids=["python-proxy", "haproxy"])
def test_cli_serves_a_rayservice_and_stops_its_ray_head_on_sigterm(
    apiserver, rs_client, namespace, tmp_path, haproxy
):
    """Also with Serve's HAProxy ingress (``--serve-haproxy``): requests reach the app through
    HAProxy, and HAProxy goes with the head."""
    health = free_port()
    haproxies_before = len(_haproxies())
    state_file = tmp_path / "state.json"
    proc = ManagedProcess(
        "kuberay-standin",
        [
            "kaito-kuberay-standin",
            "--kubeconfig", str(apiserver.kubeconfig),
            "--namespace", namespace,
            "--health-port", str(health),
            "--python-path", str(HERE),
            "--poll-interval", "1",
            "--state-file", str(state_file),
            "--ray-temp-dir", str(tmp_path / "ray"),  # long, as LocalStack passes it
            *(["--serve-haproxy"] if haproxy else []),
        ],
        tmp_path / "standin.log",
        # the token the stand-in's Ray runs with; our own RAY_AUTH_MODE=disabled must not switch it off
        env={"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_TOKEN": TOKEN},
    ).start()  # fmt: skip
    try:
        proc.wait_http(f"http://127.0.0.1:{health}/readyz", timeout=120)
        state = json.loads(state_file.read_text())
        assert state["dashboardURL"].startswith("http://127.0.0.1:")
        apps = f"{state['dashboardURL']}/api/serve/applications/"
        assert httpx.get(apps, timeout=10).status_code == 401
        assert httpx.get(apps, headers=ray_auth.headers(TOKEN), timeout=10).status_code == 200
        temp_dir = os.path.realpath(state["rayTempDir"])  # what Ray's processes see
        assert _processes_mentioning(temp_dir), "the Ray head's processes should be running"

        rs_client.create(RAYSERVICES, rayservice("cli", namespace, echo_serve_config("from the cli")))
        obj = wait_ready(rs_client, namespace, "cli")
        assert serve_endpoint(obj) == f"{state['serveBaseURL']}/{namespace}/cli"
        dashboard_port = obj["status"]["activeServiceStatus"]["rayClusterStatus"]["endpoints"]["dashboard"]
        assert state["dashboardURL"].endswith(f":{dashboard_port}")
        assert http_get_json(serve_endpoint(obj))[1]["message"] == "from the cli"
        assert (len(_haproxies()) > haproxies_before) is haproxy, _haproxies()
    finally:
        assert proc.proc is not None
        start = time.monotonic()
        if proc.running:
            os.kill(proc.proc.pid, signal.SIGTERM)  # the process only, as a supervisor would
        code = proc.proc.wait(60)
        took = time.monotonic() - start
        proc.stop()
    assert code == 0, proc.log_tail()
    assert took < 30, f"shutdown took {took:.1f}s"
    wait_for(lambda: len(_haproxies()) == haproxies_before, timeout=20, what="HAProxy gone with its head")
    wait_for(lambda: not _processes_mentioning(temp_dir), 15, "no Ray process of the stand-in's head left")
    # the requested (long) dir leads to the session logs through a symlink to a short real dir
    real = os.path.realpath(tmp_path / "ray")
    assert real != str(tmp_path / "ray") and list(Path(real).glob("session_*/logs"))
    shutil.rmtree(real)
