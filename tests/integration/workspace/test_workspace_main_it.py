"""``kaito-controller`` as a real process on a private API server: probes, leader election, the
admission webhook it registers (and removes on SIGTERM), reconciling, and /metrics.

A private server (``fresh_apiserver``) because the webhook registration is cluster-wide: while it
exists, every Workspace create in that cluster goes through this process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import warnings

import pytest
from ws_it_helpers import (
    NAMESPACES,
    REPO,
    install_crds,
    machines_of,
    make_namespace,
    wait_for,
    workspace_manifest,
)

from controller.api.kinds import WORKSPACES
from controller.main import WEBHOOK_CONFIGS
from controller.runtime import LEASES, ApiError, NotFound, RestClient
from controller.webhook.config import CONFIGURATION_NAME
from hack.ports import free_port

pytestmark = pytest.mark.integration


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_controller_process_end_to_end(fresh_apiserver, tmp_path) -> None:  # type: ignore[no-untyped-def]
    warnings.filterwarnings("ignore", message="Unverified HTTPS request")
    cp = fresh_apiserver()
    client = RestClient.from_kubeconfig(str(cp.kubeconfig))
    install_crds(client)
    client.create(NAMESPACES, {"metadata": {"name": "kaito-system"}})
    ns = make_namespace(client)
    ports = {p: free_port() for p in ("metrics", "health", "webhook")}
    log = (tmp_path / "controller.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controller.main",
            "--kubeconfig",
            str(cp.kubeconfig),
            "--namespace",
            "kaito-system",
            "--leader-elect",
            "--workers",
            "1",
            "--node-api",  # the test plays the provisioner for Machines (auto would pick NodeClaims)
            "machine",
            "--bind-host",
            "127.0.0.1",
            "--metrics-port",
            str(ports["metrics"]),
            "--health-port",
            str(ports["health"]),
            "--webhook-port",
            str(ports["webhook"]),
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        wait_for(lambda: _http_ok(f"http://127.0.0.1:{ports['health']}/readyz"), 60, "/readyz")
        assert _http_ok(f"http://127.0.0.1:{ports['health']}/healthz")
        wait_for(lambda: client.get(LEASES, "kaito-controller-leader", "kaito-system"), 30, "lease")

        # the webhook this process registered rejects a bad spec with an actionable message
        with pytest.raises(ApiError) as denied:
            client.create(WORKSPACES, workspace_manifest("bad", preset="phi-9-ultra"), ns)
        assert "phi-9-ultra" in denied.value.message and "preset" in denied.value.message

        # a good one is reconciled: Machines appear
        client.create(WORKSPACES, workspace_manifest("good"), ns)
        wait_for(lambda: machines_of(client, ns, "good"), 30, "machines")

        def metrics() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=5) as resp:
                return resp.read().decode()

        text = wait_for(lambda: (t := metrics()) and "kaito_workspace_ready{" in t and t, 30, "metrics")
        assert f'kaito_workspace_ready{{condition="ResourceReady",name="good",namespace="{ns}"}} 0.0' in text
        assert 'workqueue_adds_total{name="workspace"}' in text

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        with pytest.raises(NotFound):  # unregistered on the way out
            client.get(WEBHOOK_CONFIGS, CONFIGURATION_NAME)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        client.close()
        print((tmp_path / "controller.log").read_text()[-4000:])
