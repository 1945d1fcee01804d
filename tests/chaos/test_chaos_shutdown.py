"""SIGTERM must stop a process promptly even when its API server is gone.

Kubernetes sends SIGTERM, waits ``terminationGracePeriodSeconds`` (30 s by default) and then
SIGKILLs. A controller that spends that time retrying calls to a dead API server (releasing its
Lease, flushing Events, unregistering its webhook, draining a reconcile) is killed mid-way, and a
rolling update waits the full grace period per pod. The bound here is the Manager's own budget:
well inside the default grace period.
"""

from __future__ import annotations

import signal
import time

import pytest
from chaos_helpers import Bed

from controller.api.kinds import WORKSPACES
from hack.bench.controller_harness import (
    Proc,
    ensure_namespace,
    start_controller,
    start_provisioner,
    wait_for,
    workspace_manifest,
)

pytestmark = pytest.mark.integration

BOUND_S = 20.0  # < the 30 s default grace period, with room for a slow CI machine


def _sigterm_and_time(p: Proc) -> tuple[float, int]:
    assert p.mp.proc is not None
    t0 = time.monotonic()
    p.mp.proc.send_signal(signal.SIGTERM)
    try:
        rc = p.mp.proc.wait(60)
    except Exception:
        p.mp.kill()
        raise AssertionError(f"{p.mp.name} still running 60 s after SIGTERM:\n{p.mp.log_tail()}") from None
    took = time.monotonic() - t0
    print(f"{p.mp.name}: exit {rc} {took:.1f} s after SIGTERM")
    return took, rc


def test_processes_exit_on_sigterm_after_apiserver_died(bed: Bed) -> None:
    client = bed.client
    ns = ensure_namespace(client, "chaos-shutdown")
    prov = bed.track(start_provisioner(bed.cp, bed.workdir))
    bed.start_kuberay()
    ctrl = bed.track(start_controller(bed.cp, bed.workdir, leader_elect=True, webhook=True, log_level="INFO"))
    for i in range(5):
        client.create(WORKSPACES, workspace_manifest(f"down-{i}"), ns)
    wait_for(lambda: len(client.list(WORKSPACES, ns)[0]) == 5, 30, "workspaces stored")
    time.sleep(1.0)  # reconciles in flight

    bed.cp.kill_apiserver()
    # watches broken, calls failing; well inside the 10 s renew deadline, so the leader is still
    # leading when the signal comes (a leader that lost its lease exits 1 by design)
    time.sleep(1.0)
    took, rc = _sigterm_and_time(ctrl)
    assert took < BOUND_S, f"controller took {took:.1f} s to exit:\n{ctrl.mp.log_tail()}"
    assert rc == 0, f"controller exit code {rc}:\n{ctrl.mp.log_tail()}"
    took, rc = _sigterm_and_time(prov)
    assert took < BOUND_S, f"provisioner took {took:.1f} s to exit:\n{prov.mp.log_tail()}"
    assert rc == 0, f"provisioner exit code {rc}:\n{prov.mp.log_tail()}"

    # a controller that starts while the API server is down waits for its caches; SIGTERM ends that
    late = bed.track(start_controller(bed.cp, bed.workdir, "late", leader_elect=True, wait_ready=False))
    # its informers' failed lists come after run_forever() installed the signal handlers
    late.mp.wait_until(lambda: "list/watch failed" in late.mp.log_tail(), 60, "the late controller listing")
    took, rc = _sigterm_and_time(late)
    assert took < BOUND_S, f"a controller still syncing caches took {took:.1f} s:\n{late.mp.log_tail()}"
    assert rc == 0, f"exit code {rc}:\n{late.mp.log_tail()}"
