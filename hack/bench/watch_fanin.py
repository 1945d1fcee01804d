"""Watch fan-in: how many events/s the runtime Informer absorbs, and its memory per 1000 cached objects.

On a fresh etcd + kube-apiserver with the project's CRDs:

1. **Memory**: M Workspaces (with a realistic status) and M Machines are created; a fresh child
   process (nothing else imported but the runtime) measures its RSS, starts an Informer per kind,
   waits for sync, measures again: (RSS after - before) / (M / 1000) per kind. The same child times
   the initial LIST + store fill (objects/s).
2. **Live fan-in**: an Informer on Workspaces in this process, with the store, a counting handler and
   a runtime Controller's enqueue handler (its 2 workers reconcile a no-op), while a writer *process*
   (8 threads) merge-patches the M Workspaces round-robin for D seconds. Reported: writes/s the
   server accepted, events/s the informer delivered to its handlers, and how far behind it was when
   the writer stopped (lag until the last write's event). On 2 shared cores the writer and the API
   server share the CPU with the informer, so this is a floor for the informer, not its ceiling.
3. **Apply ceiling**: the recorded watch events of step 2 replayed through the informer's own event
   path (store update + handler dispatch, no network, no JSON decoding) as fast as possible, and
   again from JSON lines through the watch stream's decoder; best of 3 rounds.

Writes its section of docs/bench/controller.md. Run: ``python -m hack.bench.watch_fanin [--objects M]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from controller.api.kinds import MACHINES, WORKSPACES
from controller.runtime import Client, Controller, Informer, RestClient
from controller.runtime.rest import WatchStream
from hack.bench.controller_harness import (
    ensure_namespace,
    env_note,
    rss_mib,
    start_cluster,
    workspace_manifest,
)
from hack.bench.controller_scale import publish

BEGIN, END = "<!-- watch_fanin:begin -->", "<!-- watch_fanin:end -->"
NS = "fanin"


def _status() -> dict:
    now = "2026-11-25T00:00:00Z"
    conds = [
        {"type": t, "status": "True", "reason": t, "lastTransitionTime": now, "observedGeneration": 1,
         "message": f"{t}: the estimate says 1 node of Standard_NC12s_v3 (2 x 16 GiB V100) fits"}
        for t in ("ResourceReady", "InferenceReady", "WorkspaceReady")
    ]
    return {"conditions": conds, "workerNodes": ["aks-ws1234567890-0"], "targetNodeCount": 1,
            "state": "Ready"}


def seed(client: Client, m: int) -> None:
    """M Workspaces with status and M Machines shaped like the controller's."""
    from controller.api.workspace import Workspace
    from controller.workspace.machines import build_machine

    def one(i: int) -> None:
        name = f"ws-{i:05d}"
        ws = client.create(WORKSPACES, workspace_manifest(name), NS)
        ws["status"] = _status()
        client.update_status(WORKSPACES, ws)
        model = Workspace.model_validate(ws)
        client.create(MACHINES, build_machine(model, 0, "Standard_NC12s_v3", 100))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(m)))


# --- child processes ----------------------------------------------------------------------------------


def child_memory(kubeconfig: str) -> dict:
    import gc

    from controller.runtime.kinds import NAMESPACES

    client = RestClient.from_kubeconfig(kubeconfig)
    # pay the one-time costs (connection pool, thread, lazy imports) before measuring
    warm = Informer(client, NAMESPACES)
    warm.start()
    warm.wait_for_sync(60)
    warm.stop()
    out = {}
    kept = []
    for kind in (WORKSPACES, MACHINES):
        gc.collect()
        before = rss_mib(os.getpid())
        inf = Informer(client, kind)
        t0 = time.monotonic()
        inf.start()
        inf.wait_for_sync(600)
        took = time.monotonic() - t0
        gc.collect()
        after = rss_mib(os.getpid())
        n = len(inf.store.keys())
        out[kind.plural] = {"objects": n, "mib": after - before, "sync_s": took}
        kept.append(inf)  # keep it (and its store) alive while the next kind is measured
    for inf in kept:
        inf.stop()
    client.close()
    return out


def child_writer(kubeconfig: str, m: int, seconds: float, threads: int) -> dict:
    client = RestClient.from_kubeconfig(kubeconfig)
    stop = time.monotonic() + seconds
    counts = [0] * threads
    last_rv = [""] * threads

    def loop(t: int) -> None:
        i = t
        while time.monotonic() < stop:
            tick = {"metadata": {"annotations": {"bench/tick": str(i)}}}
            obj = client.patch(WORKSPACES, f"ws-{i % m:05d}", tick, namespace=NS)
            counts[t] += 1
            last_rv[t] = obj["metadata"]["resourceVersion"]
            i += threads

    t0 = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(loop, range(threads)))
    took = time.monotonic() - t0
    return {"writes": sum(counts), "seconds": took, "max_rv": max(int(r or 0) for r in last_rv)}


def _child(mode: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "hack.bench.watch_fanin", f"--child-{mode}", *args],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the live fan-in ----------------------------------------------------------------------------------


def live_fanin(kubeconfig: str, m: int, seconds: float, threads: int) -> dict:
    client = RestClient.from_kubeconfig(kubeconfig)
    inf = Informer(client, WORKSPACES)
    recorded: list[tuple[str, dict]] = []
    seen = {"events": 0, "max_rv": 0, "first": 0.0, "last": 0.0}
    lock = threading.Lock()

    def count(*objs: dict) -> None:
        obj = objs[-1]
        rv = int(obj["metadata"]["resourceVersion"])
        now = time.monotonic()
        with lock:
            seen["events"] += 1
            seen["max_rv"] = max(seen["max_rv"], rv)
            seen["first"] = seen["first"] or now
            seen["last"] = now
        recorded.append(("MODIFIED", obj))

    ctrl = Controller("fanin", lambda req: None, workers=2)
    ctrl.watch(inf)
    inf.add_event_handler(on_update=count)
    inf.start()
    inf.wait_for_sync(600)
    ctrl.start()
    seen["events"] = 0
    recorded.clear()
    w = _child("writer", kubeconfig, str(m), str(seconds), str(threads))
    t_writer_done = time.monotonic()
    deadline = t_writer_done + 120
    while seen["max_rv"] < w["max_rv"] and time.monotonic() < deadline:
        time.sleep(0.05)
    lag = time.monotonic() - t_writer_done
    events, span = seen["events"], max(seen["last"] - seen["first"], 1e-9)
    ctrl.stop()
    inf.stop()
    client.close()
    # apply ceiling: the same events through the informer's event path, no network
    replay = Informer(client, WORKSPACES)
    handled = [0]
    replay.add_event_handler(on_update=lambda old, new: handled.__setitem__(0, handled[0] + 1))
    rctrl = Controller("fanin-replay", lambda req: None, workers=2)
    rctrl.watch(replay)
    for _, obj in recorded[: len(recorded) // 2 or 1]:  # prime the store (adds)
        replay._apply({"type": "ADDED", "object": json.loads(json.dumps(obj))})
    batch = [{"type": "MODIFIED", "object": json.loads(json.dumps(o))} for _, o in recorded]
    for i, ev in enumerate(batch):  # distinct resourceVersions so every event dispatches
        ev["object"]["metadata"]["resourceVersion"] = str(10**9 + i)
    lines = [json.dumps(ev).encode() for ev in batch]
    apply_s = decode_apply_s = float("inf")
    for rnd in range(3):  # best of 3: the box is shared, the best run is the least disturbed
        for ev in batch:  # new versions each round, so every event dispatches
            meta = ev["object"]["metadata"]
            meta["resourceVersion"] = f"{rnd + 1}{meta['resourceVersion']}"
        t1 = time.monotonic()
        for ev in batch:
            replay._apply(ev)
        apply_s = min(apply_s, time.monotonic() - t1)
        # the same from JSON lines through the watch stream's decoder
        lines = [line.replace(b'"resourceVersion": "', f'"resourceVersion": "{rnd + 5}'.encode(), 1)
                 for line in lines]
        t2 = time.monotonic()
        for line in lines:
            replay._apply(WatchStream._decode(line))
        decode_apply_s = min(decode_apply_s, time.monotonic() - t2)
    return {
        "writes": w["writes"], "write_s": w["seconds"], "events": events, "span": span, "lag": lag,
        "apply_events": len(batch), "apply_s": apply_s, "decode_apply_s": decode_apply_s,
    }


def render(m: int, mem: dict, live: dict, note: str) -> str:
    ws, mc = mem["workspaces"], mem["machines"]
    lines = [
        BEGIN,
        "## Watch fan-in (hack/bench/watch_fanin.py)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {env_note()}, "
        "shared with other work.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| live: writes/s accepted by the API server (writer process, 8 threads) "
        f"| {live['writes'] / live['write_s']:.0f} "
        f"({live['writes']} merge patches in {live['write_s']:.1f} s) |",
        f"| live: events/s delivered to store + handlers (counter + controller enqueue) "
        f"| {live['events'] / live['span']:.0f} ({live['events']} events) |",
        f"| live: informer lag behind the last write when the writer stopped | {live['lag'] * 1000:.0f} ms |",
        f"| apply ceiling: events/s through store + handlers, no network/JSON "
        f"| {live['apply_events'] / max(live['apply_s'], 1e-9):,.0f} |",
        f"| decode + apply ceiling: the same from JSON lines (the watch stream's decoder) "
        f"| {live['apply_events'] / max(live['decode_apply_s'], 1e-9):,.0f} |",
        f"| initial LIST + store fill, {ws['objects']} Workspaces "
        f"| {ws['objects'] / ws['sync_s']:.0f} objects/s |",
        f"| initial LIST + store fill, {mc['objects']} Machines "
        f"| {mc['objects'] / mc['sync_s']:.0f} objects/s |",
        f"| memory per 1000 cached Workspaces (with status; RSS delta in a fresh process) "
        f"| {ws['mib'] * 1000 / max(ws['objects'], 1):.1f} MiB |",
        f"| memory per 1000 cached Machines | {mc['mib'] * 1000 / max(mc['objects'], 1):.1f} MiB |",
    ]
    if note:
        lines += ["", note]
    lines.append(END)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--note", default="")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--child-memory", nargs=1, metavar="KUBECONFIG")
    ap.add_argument("--child-writer", nargs=4, metavar=("KUBECONFIG", "M", "SECONDS", "THREADS"))
    args = ap.parse_args(argv)
    if args.child_memory:
        print(json.dumps(child_memory(args.child_memory[0])))
        return 0
    if args.child_writer:
        kc, m, s, t = args.child_writer
        print(json.dumps(child_writer(kc, int(m), float(s), int(t))))
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="kaito-fanin-"))
    cp, client = start_cluster(workdir / "cp")
    try:
        ensure_namespace(client, NS)
        t0 = time.monotonic()
        seed(client, args.objects)
        print(f"seeded {args.objects} Workspaces + Machines in {time.monotonic() - t0:.1f}s", flush=True)
        mem = _child("memory", str(cp.kubeconfig))
        print(f"memory: {mem}", flush=True)
        live = live_fanin(str(cp.kubeconfig), args.objects, args.seconds, args.threads)
        print(f"live: {live}", flush=True)
    finally:
        client.close()
        cp.stop()
    return publish(render(args.objects, mem, live, args.note), BEGIN, END, write=not args.no_write)


if __name__ == "__main__":
    raise SystemExit(main())
