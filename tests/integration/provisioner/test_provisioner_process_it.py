"""``kaito-provisioner`` as a process: flags, leader election, probes, /metrics, SIGTERM.

The in-process tests cover the logic; this one checks the wiring ``main()`` adds (argument
parsing, the phase collector on /metrics, the lease, a clean exit on SIGTERM).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

import pytest
from prov_it_helpers import RUN_LABEL, condition_is, delete_machines, machine_manifest, wait_for

from controller.api.kinds import MACHINES
from controller.api.machine import CONDITION_READY
from controller.runtime import LEASES, Client
from hack.ports import free_port

pytestmark = pytest.mark.integration



def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except OSError as exc:
        return getattr(exc, "code", 0) or 0, str(exc)


def test_process_serves_probes_metrics_and_stops_on_sigterm(
    apiserver, prov_client: Client, cloud_ns: str, run_id: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    health, metrics = free_port(), free_port()
    log = (tmp_path / "provisioner.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "provisioner.main",
            "--kubeconfig", str(apiserver.kubeconfig),
            "--cloud", "fake",
            "--node-api", "machine",
            "--namespace", cloud_ns,
            "--fake-namespace", cloud_ns,
            "--fake-delay", "0.5",
            "--fake-ready-delay", "0.2",
            "--registration-ttl", "2m",
            "--machine-selector", f"{RUN_LABEL}={run_id}",
            "--health-port", str(health),
            "--metrics-port", str(metrics),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    try:
        wait_for(lambda: _get(f"http://127.0.0.1:{health}/readyz")[0] == 200, 60, "readyz")
        assert _get(f"http://127.0.0.1:{health}/healthz")[0] == 200
        wait_for(lambda: prov_client.get(LEASES, "kaito-provisioner-leader", cloud_ns), 30, "lease taken")

        name = f"ws{run_id}"
        prov_client.create(MACHINES, machine_manifest(name, run_id, sku="Standard_Fake_GPU"))
        wait_for(lambda: condition_is(prov_client, name, CONDITION_READY), 30, "machine ready")

        _, text = _get(f"http://127.0.0.1:{metrics}/metrics")
        assert 'kaito_provisioner_machines{phase="Ready"}' in text
        assert "kaito_provisioner_machine_launch_duration_seconds_count" in text
        assert 'controller_runtime_reconcile_total{controller="machine"' in text
        delete_machines(prov_client, run_id)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    assert code == 0, (tmp_path / "provisioner.log").read_text()[-3000:]
