"""Restart the kube-apiserver and expire watches (410 Gone) while Workspaces are reconciled.

How the faults reach the controller: a broken connection (apiserver restart) makes the runtime's
informers relist at once; a 410 only comes back when a watch that ended *cleanly* is resumed from a
resourceVersion that no longer exists. So the API server runs with ``--watch-cache=false`` (watches
are served by etcd, where a compaction removes old revisions) and the controller's informers get a
short watch timeout (2-4 s instead of 5-10 min), so that in this test's seconds every informer's
watch ends and resumes many times. The workspace controller runs in this process (the same wiring
as ``kaito-controller``: ``running_controller``) so its informers can be given that timeout.

Faults, in order, with creates and deletes landing right after each (while informers relist or
re-watch, so a lost event would leave a Workspace behind): an apiserver restart during the first
batch; etcd compacted at its current revision (twice, with a pause so resumed watches get 410);
another restart right after a compaction. The end state is checked as in the kill test.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import pytest
from chaos_helpers import SEED, Bed, wait_converged

from controller.api.kinds import WORKSPACES
from hack.bench.controller_harness import (
    ensure_namespace,
    etcd_compact,
    running_controller,
    start_provisioner,
    wait_for,
    workspace_manifest,
)

pytestmark = pytest.mark.integration

WATCH_TIMEOUT = 2


def test_apiserver_restart_and_watch_expiry(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="controller.runtime.informer")
    rng = random.Random(SEED + 1)
    bed = Bed(tmp_path, ["--watch-cache=false"])
    try:
        client = bed.client
        ns = ensure_namespace(client, "chaos-410")
        bed.track(start_provisioner(bed.cp, bed.workdir))
        bed.start_kuberay()
        alive: set[str] = set()

        def controller_expiries() -> list[str]:
            """410s seen by the controller's informers (the in-process KubeRay watches RayServices)."""
            return [r.getMessage() for r in caplog.records if "watch expired" in r.getMessage()
                    and any(k in r.getMessage() for k in ("workspaces", "machines", "services", "jobs"))]

        def create(prefix: str, n: int) -> None:
            for i in range(n):
                client.create(WORKSPACES, workspace_manifest(f"{prefix}-{i}"), ns)
                alive.add(f"{ns}/{prefix}-{i}")

        with running_controller(str(bed.cp.kubeconfig)) as mgr:
            informers = mgr.factory.informers
            for inf in informers:
                inf.watch_timeout = WATCH_TIMEOUT  # used from the next watch on (after the restart)
            create("a", 12)
            time.sleep(rng.uniform(0.5, 2.0))
            bed.cp.restart_apiserver()  # fault 1: every watch breaks, informers relist
            create("b", 4)
            wait_for(lambda: all(i.relists >= 1 for i in informers), 60, "relist after the restart")
            revisions = [etcd_compact(bed.cp.etcd_url)]  # fault 2: resumed watches get 410
            create("c", 4)
            for name in rng.sample(sorted(alive), 4):
                client.delete(WORKSPACES, name.split("/")[1], ns)
                alive.discard(name)
            for _ in range(4):  # a resumed watch needs a write between its last version and the compaction
                if controller_expiries():
                    break
                time.sleep(2 * WATCH_TIMEOUT + 1)
                revisions.append(etcd_compact(bed.cp.etcd_url))  # fault 3 (and again if none expired yet)
            bed.cp.restart_apiserver()  # fault 4, right after a compaction
            create("d", 4)
            time.sleep(rng.uniform(0.5, 2.0))
            revisions.append(etcd_compact(bed.cp.etcd_url))  # fault 5

            prov_log = bed.procs[0].mp
            wait_converged(client, alive, timeout=180, context=f"provisioner log:\n{prov_log.log_tail(6000)}")
            relists = {str(i.kind): i.relists for i in informers}
        expired = [r.getMessage() for r in caplog.records if "watch expired" in r.getMessage()]
        assert controller_expiries(), f"no controller informer saw 410 Gone: fault not injected ({expired})"
        print(f"2 apiserver restarts, etcd compacted at {revisions}; {len(expired)} watch expiries (410; "
              f"{len(controller_expiries())} in the controller's informers) "
              f"relisted, informer relists {relists}; {len(alive)} workspaces converged")
    finally:
        bed.close()
