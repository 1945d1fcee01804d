"""Two ``kaito-controller`` replicas with leader election: SIGKILL the leader mid-work.

A SIGKILLed leader cannot release its Lease, so the standby must wait for it to expire: takeover is
due within lease duration + one retry period of the last renewal (15 s + 2 s, the Manager's
defaults). "Exactly one reconciles" is read from each process's own /metrics: the standby's
``controller_runtime_reconcile_total`` stays 0 while it waits, and after the takeover (with the
killed replica restarted as the new standby) only the new leader's count moves. The Lease's
holderIdentity must change hands too.
"""

from __future__ import annotations

import time

import pytest
from chaos_helpers import Bed, converged

from controller.api.kinds import WORKSPACES
from controller.runtime import LEASES
from hack.bench.controller_harness import (
    SYSTEM_NS,
    Proc,
    ensure_namespace,
    metric_sum,
    start_controller,
    start_provisioner,
    wait_for,
    workspace_manifest,
)

pytestmark = pytest.mark.integration

LEASE = "kaito-controller-leader"
LEASE_DURATION, RETRY_PERIOD = 15.0, 2.0


def is_leader(p: Proc) -> bool:
    try:
        return metric_sum(p.metrics(), "leader_election_master_status") == 1
    except OSError:
        return False


def reconciles(p: Proc) -> float:
    return metric_sum(p.metrics(), "controller_runtime_reconcile_total", controller="workspace")


def holder(bed: Bed) -> str:
    return bed.client.get(LEASES, LEASE, SYSTEM_NS)["spec"].get("holderIdentity") or ""


def test_leader_killed_standby_takes_over(bed: Bed) -> None:
    client = bed.client
    ns = ensure_namespace(client, "chaos-ha")
    bed.track(start_provisioner(bed.cp, bed.workdir))
    bed.start_kuberay()
    a = bed.track(start_controller(bed.cp, bed.workdir, "replica-a", leader_elect=True, log_level="INFO"))
    b = bed.track(start_controller(bed.cp, bed.workdir, "replica-b", leader_elect=True, log_level="INFO"))
    wait_for(lambda: is_leader(a) or is_leader(b), 30, "a leader")
    leader, standby = (a, b) if is_leader(a) else (b, a)
    first_holder = holder(bed)
    assert first_holder and not is_leader(standby)

    alive = set()
    for i in range(6):
        client.create(WORKSPACES, workspace_manifest(f"before-{i}"), ns)
        alive.add(f"{ns}/before-{i}")
    wait_for(lambda: converged(client, alive)[0], 60, "first batch converged", interval=0.5)
    assert reconciles(leader) > 0
    assert reconciles(standby) == 0, "the standby reconciled while another replica held the lease"

    # kill the leader in the middle of a batch; the standby takes over within the lease duration
    for i in range(6):
        client.create(WORKSPACES, workspace_manifest(f"during-{i}"), ns)
        alive.add(f"{ns}/during-{i}")
    time.sleep(0.3)
    killed_at = time.monotonic()
    leader.mp.kill()
    wait_for(lambda: is_leader(standby), LEASE_DURATION + RETRY_PERIOD + 10, "takeover", interval=0.2)
    takeover = time.monotonic() - killed_at
    assert takeover <= LEASE_DURATION + RETRY_PERIOD + 2.0, f"takeover took {takeover:.1f}s"
    assert holder(bed) not in ("", first_holder)
    wait_for(lambda: converged(client, alive)[0], 60, "batch converged by the new leader", interval=0.5)

    # the killed replica comes back as a standby: still exactly one reconciles
    restarted = bed.track(start_controller(bed.cp, bed.workdir, "replica-restarted", leader_elect=True,
                                           log_level="INFO"))
    new_leader_before = reconciles(standby)
    for i in range(4):
        client.create(WORKSPACES, workspace_manifest(f"after-{i}"), ns)
        alive.add(f"{ns}/after-{i}")
    wait_for(lambda: converged(client, alive)[0], 60, "last batch converged", interval=0.5)
    assert reconciles(standby) > new_leader_before
    assert not is_leader(restarted) and reconciles(restarted) == 0
    print(f"leader SIGKILLed; standby took over after {takeover:.1f}s (lease {LEASE_DURATION:.0f}s "
          f"+ retry {RETRY_PERIOD:.0f}s); {len(alive)} workspaces converged, one reconciler at a time")
