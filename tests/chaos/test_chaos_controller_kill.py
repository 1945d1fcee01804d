"""SIGKILL ``kaito-controller`` at random (seeded) moments while it reconciles 20 Workspaces.

Half the kills land once the caches are synced and workers are busy, half anywhere from start-up
on. Between kills the world keeps moving: Workspaces are created while no controller runs, and some
are deleted (so kills also land in finalization). After the last restart the cluster must hold
exactly what a fault-free run makes: every live Workspace Ready with exactly its deterministic
Machines, one RayService and one Service; deleted Workspaces gone with their Machines, RayServices
and Services; no Machine whose owner is gone; one fake-cloud instance per Machine (no leaked VMs).
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from chaos_helpers import SEED, Bed, wait_converged

from controller.api.kinds import WORKSPACES
from hack.bench.controller_harness import (
    ensure_namespace,
    metric_sum,
    ready,
    start_controller,
    start_provisioner,
    workspace_manifest,
)

pytestmark = pytest.mark.integration

N_FIRST, N_WHILE_DOWN, N_DELETED, KILLS = 20, 4, 5, 6


def test_sigkill_controller_during_reconciles(bed: Bed) -> None:
    rng = random.Random(SEED)
    client = bed.client
    ns = ensure_namespace(client, "chaos-kill")
    bed.track(start_provisioner(bed.cp, bed.workdir))
    bed.start_kuberay()

    def create(names: list[str]) -> None:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda n: client.create(WORKSPACES, workspace_manifest(n), ns), names))

    first = [f"ws-{i:02d}" for i in range(N_FIRST)]
    ctrl = bed.track(start_controller(bed.cp, bed.workdir, "controller-0", log_level="INFO"))
    create(first)
    alive = {f"{ns}/{n}" for n in first}
    kill_points: list[str] = []
    for k in range(KILLS):
        if k % 2 == 0:  # in the middle of reconciling: caches synced, workers busy
            ctrl.mp.wait_http(f"http://127.0.0.1:{ctrl.ports['health']}/readyz", timeout=60)
            time.sleep(rng.uniform(0.05, 1.0))
            done_before = metric_sum(ctrl.metrics(), "controller_runtime_reconcile_total")
            where = f"{done_before:.0f} reconciles in"
        else:  # anywhere from start-up through cache sync into the first reconciles
            time.sleep(rng.uniform(0.2, 3.0))
            where = "start-up"
        ready_now = sum(ready(w) for w in client.list(WORKSPACES, ns)[0])
        ctrl.mp.kill()
        kill_points.append(f"{where} ({ready_now} ready)")
        if k == 1:  # while no controller runs: new Workspaces, and deletions that need the finalizer
            extra = [f"late-{i}" for i in range(N_WHILE_DOWN)]
            create(extra)
            alive |= {f"{ns}/{n}" for n in extra}
            doomed = rng.sample(first, N_DELETED)
            for n in doomed:
                client.delete(WORKSPACES, n, ns)
            alive -= {f"{ns}/{n}" for n in doomed}
        if k == 3:  # deletions that land while a controller is finalizing
            for n in rng.sample(sorted(a.split("/")[1] for a in alive), 2):
                client.delete(WORKSPACES, n, ns)
                alive.discard(f"{ns}/{n}")
        ctrl = bed.track(start_controller(bed.cp, bed.workdir, f"controller-{k + 1}", wait_ready=False,
                                          log_level="INFO"))
    ctrl.mp.wait_http(f"http://127.0.0.1:{ctrl.ports['health']}/readyz", timeout=60)

    wait_converged(client, alive, context=f"kills: {kill_points}\n{ctrl.mp.log_tail()}")
    assert ctrl.healthy()
    print(f"seed {SEED}: {KILLS} SIGKILLs: {kill_points}; "
          f"{len(alive)} workspaces converged, {N_DELETED + 2} deleted mid-chaos")
