"""Shared pieces of the chaos tests: the seed and ``Bed`` (one private cluster + its processes)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from controller.api.kinds import MACHINES
from controller.runtime import Client
from controller.workspace.names import owner_selector
from hack.bench.controller_harness import (
    FakeKubeRay,
    Proc,
    cluster_state,
    expected_children,
    ready,
    start_cluster,
)

SEED = int(os.environ.get("KAITO_CHAOS_SEED", "20261125"))


class Bed:
    """One private cluster plus whatever a test starts on it; ``close()`` stops it all."""

    def __init__(self, workdir: Path, extra_apiserver_args: list[str] | None = None) -> None:
        self.workdir = workdir
        self.cp, self.client = start_cluster(workdir / "cp", extra_apiserver_args or [])
        self.procs: list[Proc] = []
        self.kuberay: FakeKubeRay | None = None

    def track(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def start_kuberay(self) -> FakeKubeRay:
        self.kuberay = FakeKubeRay(self.cp.kubeconfig).start()
        return self.kuberay

    def close(self) -> None:
        if self.kuberay is not None:
            self.kuberay.stop()
        for p in reversed(self.procs):
            p.mp.stop(grace=5)
        self.client.close()
        self.cp.stop()


def converged(client: Client, alive: set[str]) -> tuple[bool, str]:
    """Whether the cluster holds exactly what a fault-free run makes for ``alive`` ("ns/name") Workspaces;
    else why not."""
    state = cluster_state(client)
    workspaces = state["workspaces"]
    assert isinstance(workspaces, dict)
    if set(workspaces) != alive:
        return False, f"workspaces {sorted(set(workspaces) ^ alive)} differ"
    not_ready = sorted(k for k, w in workspaces.items() if not ready(w))
    if not_ready:
        first = workspaces[not_ready[0]]
        conds = [(c["type"], c["status"], c.get("reason"), c.get("message"))
                 for c in (first.get("status") or {}).get("conditions") or []]
        ns, name = not_ready[0].split("/")
        machines, _ = client.list(MACHINES, label_selector=owner_selector(ns, name))
        mstate = [(m["metadata"]["name"], m["metadata"].get("resourceVersion"), m.get("status"))
                  for m in machines]
        return False, f"not ready: {not_ready}; {not_ready[0]}: {conds}; its machines: {mstate}"
    want_machines, want_rs = {}, []
    for key, ws in workspaces.items():
        machines, rs = expected_children(ws)
        want_machines[key] = sorted(machines)
        want_rs.append(f"{key.split('/')[0]}/{rs}")
    if state["machines"] != want_machines:
        return False, f"machines {state['machines']} != {want_machines}"
    if state["rayservices"] != sorted(want_rs) or state["services"] != sorted(want_rs):
        return False, f"rayservices {state['rayservices']} / services {state['services']}"
    if not state["instances"] == state["nodes"] == state["machine_count"]:
        counts = f"{state['instances']} cloud instances, {state['nodes']} nodes"
        return False, f"{counts} for {state['machine_count']} machines"
    return True, "ok"


def wait_converged(client: Client, alive: set[str], timeout: float = 120.0, context: str = "") -> None:
    """Wait until ``converged``; on timeout fail with the last reason (and ``context``)."""
    deadline = time.monotonic() + timeout
    why = "not checked"
    while time.monotonic() < deadline:
        ok, why = converged(client, alive)
        if ok:
            return
        time.sleep(1.0)
    raise AssertionError(f"not converged after {timeout:.0f}s: {why}\n{context}")
