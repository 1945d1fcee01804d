"""Controller scale: N Workspaces applied at once, against the real kube-apiserver.

For each N (default 100, 500, 1000) on a fresh etcd + kube-apiserver:

1. ``kaito-controller`` (2 workers, no webhook, no leader election) and ``kaito-provisioner``
   (fake cloud, zero boot/ready delay) run as processes; KubeRay is played by ``FakeKubeRay`` in
   this process (it only writes RayService status, as KubeRay would once Serve runs);
2. N Workspaces are created by 8 threads at once; we poll (one LIST per kind per second) until every
   Workspace has its Machines and its RayService ("children"), then until every one is
   WorkspaceReady ("ready");
3. from the controller's /metrics: p50/p99 of ``controller_runtime_reconcile_time_seconds`` and the
   reconcile count; from the API server's ``apiserver_request_total`` (before/after): requests per
   Workspace, split by resource and verb; the controller's RSS (idle, peak, end) every 0.5 s;
4. the limit: with the controller and provisioner stopped, a plain loop creates the same objects
   (Machines + RayService + Service per Workspace, built by the controller's own builders) on the
   same API server, with 2 threads (the controller's worker count) and 8 threads.

Writes a markdown section to docs/bench/controller.md (between markers, so watch_fanin.py's
section is kept). Run: ``python -m hack.bench.controller_scale [--sizes 100,500,1000]``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from controller.api.kinds import MACHINES, RAYSERVICES, WORKSPACES
from controller.api.workspace import Workspace
from controller.runtime import Client
from controller.workspace.inference import build_rayservice, build_service
from controller.workspace.machines import build_machine
from controller.workspace.plan import plan_for
from controller.workspace.reconciler import DEFAULT_SERVE_IMAGE, SERVICES
from controller.workspace.serveconfig import build_serve_config
from hack.bench.controller_harness import (
    EVENTS,
    REPO,
    FakeKubeRay,
    apiserver_requests,
    ensure_namespace,
    env_note,
    histogram_quantile,
    metric_sum,
    rss_mib,
    start_cluster,
    start_controller,
    start_provisioner,
    workspace_manifest,
)

DOC = REPO / "docs" / "bench" / "controller.md"
BEGIN, END = "<!-- controller_scale:begin -->", "<!-- controller_scale:end -->"
CREATE_THREADS = 8


@dataclass
class ScaleResult:
    n: int
    workers: int = 2
    create_s: float = 0.0
    children_s: float = 0.0
    ready_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    reconciles: float = 0.0
    requests: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    rss_idle: float = 0.0
    rss_peak: float = 0.0
    rss_end: float = 0.0
    loop: dict[int, float] = field(default_factory=dict)  # threads -> seconds for the same objects
    timed_out: bool = False
    outcomes: dict[str, float] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)  # Events written, by reporting component


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.peak = pid, every, 0.0
        self._stop_ev = threading.Event()

    def run(self) -> None:
        while not self._stop_ev.wait(self.every):
            try:
                self.peak = max(self.peak, rss_mib(self.pid))
            except OSError:
                return

    def stop(self) -> float:
        self._stop_ev.set()
        self.join()
        return self.peak


def _progress(client: Client, ns: str, n: int) -> tuple[int, int, int]:
    """(workspaces with Machines and RayService, WorkspaceReady, Machines Ready)."""
    machines, _ = client.list(MACHINES, label_selector=f"kaito.sh/workspacenamespace={ns}")
    with_machine = {m["metadata"]["labels"]["kaito.sh/workspace"] for m in machines}
    machines_ready = sum(
        any(c.get("type") == "Ready" and c.get("status") == "True"
            for c in (m.get("status") or {}).get("conditions") or [])
        for m in machines
    )
    rss, _ = client.list(RAYSERVICES, ns)
    with_rs = {r["metadata"]["name"] for r in rss}
    workspaces, _ = client.list(WORKSPACES, ns)
    ready = 0
    for w in workspaces:
        conds = {c["type"]: c["status"] for c in (w.get("status") or {}).get("conditions") or []}
        ready += conds.get("WorkspaceReady") == "True"
    return len(with_machine & with_rs), ready, machines_ready


def run_controller(n: int, workdir: Path, timeout: float, workers: int = 2,  # type: ignore[no-untyped-def]
                   log=print) -> ScaleResult:
    res = ScaleResult(n, workers)
    # a /16 for Services: the control plane's default /24 holds ~250, and each Workspace has one
    cp, client = start_cluster(workdir / "cp", ["--service-cluster-ip-range=10.96.0.0/16"])
    ctrl = prov = kuberay = None
    try:
        ns = ensure_namespace(client, "scale")
        prov = start_provisioner(cp, workdir)
        ctrl = start_controller(cp, workdir, workers=workers)
        kuberay = FakeKubeRay(cp.kubeconfig).start()
        time.sleep(2.0)
        res.rss_idle = ctrl.rss_mib()
        sampler = RssSampler(ctrl.pid)
        sampler.start()
        before = apiserver_requests(cp)
        t0 = time.monotonic()
        with ThreadPoolExecutor(CREATE_THREADS) as pool:
            names = [f"ws-{i:04d}" for i in range(n)]
            list(pool.map(lambda name: client.create(WORKSPACES, workspace_manifest(name), ns), names))
        res.create_s = time.monotonic() - t0
        deadline = t0 + timeout
        children = ready = 0
        last_print = 0.0
        while time.monotonic() < deadline:
            children, ready, m_ready = _progress(client, ns, n)
            now = time.monotonic() - t0
            if now - last_print >= 10:
                last_print = now
                log(f"  [{now:5.1f}s] machines ready {m_ready}, with Machines+RayService {children}, "
                    f"WorkspaceReady {ready} / {n}")
            if children == n and not res.children_s:
                res.children_s = now
            if ready == n:
                res.ready_s = now
                break
            if not (ctrl.mp.running and prov.mp.running):
                raise RuntimeError(f"a process died:\n{ctrl.mp.log_tail()}\n{prov.mp.log_tail()}")
            time.sleep(1.0)
        else:
            res.timed_out = True
            log(f"  N={n}: timed out after {timeout:.0f}s with {children} children, {ready} ready")
        time.sleep(2.0)  # let the last status writes land before counting
        after = apiserver_requests(cp)
        res.rss_peak = max(sampler.stop(), ctrl.rss_mib())
        res.rss_end = ctrl.rss_mib()
        metrics = ctrl.metrics()
        for q, attr in ((0.5, "p50_ms"), (0.99, "p99_ms")):
            v = histogram_quantile(
                metrics, "controller_runtime_reconcile_time_seconds", q, controller="workspace"
            )
            setattr(res, attr, None if v is None else v * 1000)
        res.reconciles = metric_sum(metrics, "controller_runtime_reconcile_total", controller="workspace")
        for outcome in ("error", "requeue", "requeue_after"):
            res.outcomes[outcome] = metric_sum(
                metrics, "controller_runtime_reconcile_total", controller="workspace", result=outcome
            )
        delta = after - before
        res.events = events_by_component(client)
        res.requests = sum(delta.values())
        for (resource, sub, verb), count in delta.items():
            key = f"{resource}{'/' + sub if sub else ''} {verb}"
            res.by_kind[key] = res.by_kind.get(key, 0) + count
        log(f"  N={n}: children {res.children_s:.1f}s, ready {res.ready_s:.1f}s, "
            f"{res.requests / n:.1f} req/ws, rss {res.rss_idle:.0f}->{res.rss_peak:.0f} MiB")
        # the limit: the same objects from a plain loop, with nothing else running
        ctrl.mp.stop()
        prov.mp.stop()
        kuberay.stop()
        ctrl = prov = kuberay = None
        for threads in sorted({2, workers, CREATE_THREADS}):
            res.loop[threads] = plain_loop(client, ensure_namespace(client, f"loop-{threads}"), n, threads)
            log(f"  N={n}: plain loop with {threads} threads {res.loop[threads]:.1f}s")
        return res
    finally:
        for p in (ctrl, prov):
            if p is not None:
                p.mp.stop()
        if kuberay is not None:
            kuberay.stop()
        client.close()
        cp.stop()


def events_by_component(client: Client) -> dict[str, int]:
    """Which process wrote the Events (the API server's request counter cannot tell writers apart)."""
    from collections import Counter

    items, _ = client.list(EVENTS)
    return dict(Counter(e.get("reportingComponent") or (e.get("source") or {}).get("component", "?")
                        for e in items))


def plain_loop(client: Client, ns: str, n: int, threads: int) -> float:
    """Create Machines + RayService + Service for n workspaces (as the controller would), timed."""
    jobs = []
    for i in range(n):
        raw = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", **workspace_manifest(f"ws-{i:04d}")}
        raw["metadata"].update(namespace=ns, uid=f"00000000-0000-0000-0000-{i:012d}")
        ws = Workspace.model_validate(raw)
        plan = plan_for(ws)
        objs = [(MACHINES, build_machine(ws, k, plan.instance_type, plan.disk_gib))
                for k in range(plan.node_count)]
        rs = build_rayservice(ws, plan, build_serve_config(ws, plan), DEFAULT_SERVE_IMAGE)
        objs.append((RAYSERVICES, rs))
        objs.append((SERVICES, build_service(ws)))
        jobs.append(objs)

    def one(objs: list) -> None:  # type: ignore[type-arg]
        for kind, obj in objs:
            client.create(kind, obj)

    t0 = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, jobs))
    return time.monotonic() - t0


def _fmt(v: float | None, spec: str = ".0f") -> str:
    return "-" if v is None else format(v, spec)


def _outcomes(r: ScaleResult) -> str:
    return " / ".join(f"{r.outcomes.get(k, 0) / r.n:.1f}" for k in ("error", "requeue", "requeue_after"))


def render(results: list[ScaleResult], note: str) -> str:
    lines = [
        BEGIN,
        "## Controller scale (hack/bench/controller_scale.py)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {env_note()}, shared with other "
        "work. One fresh etcd + kube-apiserver per row; controller with the workers shown; provisioner on "
        "the fake cloud with zero delay; RayService status written by the bench (KubeRay's part). "
        "Workspaces: phi-3-mini-4k-instruct on Standard_NC12s_v3 (1 Machine each), created by 8 threads "
        "at once.",
        "",
        "| N | workers | create (s) | all have Machines + RayService (s) | all WorkspaceReady (s) "
        "| ready ws/s "
        "| reconciles/ws (error / requeue / requeue_after) | reconcile p50 (ms) | p99 (ms) "
        "| API requests/ws (all actors) "
        "| RSS idle / peak / end (MiB) | RSS growth (KiB/ws) | plain loop 2 thr (s) | plain loop 8 thr (s) "
        "| controller / loop (same threads as workers) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        growth = (r.rss_end - r.rss_idle) * 1024 / r.n
        same = r.loop.get(r.workers) or r.loop.get(2)
        ratio = (r.children_s / same) if same and r.children_s else None
        ready_rate = r.n / r.ready_s if r.ready_s else None
        lines.append(
            f"| {r.n}{' (timed out)' if r.timed_out else ''} | {r.workers} | {r.create_s:.1f} "
            f"| {_fmt(r.children_s, '.1f')} "
            f"| {_fmt(r.ready_s, '.1f')} | {_fmt(ready_rate, '.1f')} "
            f"| {r.reconciles / r.n:.1f} ({_outcomes(r)}) "
            f"| {_fmt(r.p50_ms, '.1f')} | {_fmt(r.p99_ms, '.1f')} | {r.requests / r.n:.1f} "
            f"| {r.rss_idle:.0f} / {r.rss_peak:.0f} / {r.rss_end:.0f} | {growth:.0f} "
            f"| {_fmt(r.loop.get(2), '.1f')} | {_fmt(r.loop.get(CREATE_THREADS), '.1f')} "
            f"| {_fmt(ratio, '.1f')}x |"
        )
    lines += ["", "API requests per Workspace by resource and verb (apiserver_request_total delta; "
              "writers: workspaces create = bench, workspaces update/patch/status = controller, machines "
              "create = controller, machines status / nodes / configmaps = provisioner + fake cloud, "
              "rayservices status = bench as KubeRay, services/rayservices create = controller, events = "
              "controller (see below); list/watch = informers and the bench's 1 s progress polls):", ""]
    keys = sorted(
        {k for r in results for k in r.by_kind}, key=lambda k: -max(r.by_kind.get(k, 0) for r in results)
    )
    lines.append("| resource verb | " + " | ".join(f"N={r.n}/{r.workers}w" for r in results) + " |")
    lines.append("|---|" + "---|" * len(results))
    for k in keys:
        if max(r.by_kind.get(k, 0) / r.n for r in results) < 0.05:
            continue
        lines.append(f"| {k} | " + " | ".join(f"{r.by_kind.get(k, 0) / r.n:.2f}" for r in results) + " |")
    per_component = "; ".join(
        f"N={r.n}/{r.workers}w: " + ", ".join(f"{k} {v / r.n:.1f}" for k, v in sorted(r.events.items()))
        for r in results
    )
    lines += ["", "Events written per Workspace, by reporting component (listed after the run; one Event "
              f"may count several occurrences): {per_component}"]
    if note:
        lines += ["", note]
    lines.append(END)
    return "\n".join(lines)


def write_section(text: str, begin: str, end: str) -> None:
    DOC.parent.mkdir(parents=True, exist_ok=True)
    doc = DOC.read_text() if DOC.exists() else "# Controller benchmarks\n\n"
    if begin in doc and end in doc:
        head, rest = doc.split(begin, 1)
        doc = head + text + rest.split(end, 1)[1]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    DOC.write_text(doc)


def publish(text: str, begin: str, end: str, write: bool) -> int:
    """Print a section and (unless ``write`` is false) put it into docs/bench/controller.md."""
    print(text)
    if write:
        write_section(text, begin, end)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,500,1000")
    ap.add_argument("--timeout", type=float, default=900.0, help="per N, seconds")
    ap.add_argument("--workers", default="2", help="controller --workers values to compare, e.g. 2,8")
    ap.add_argument("--note", default="")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        for workers in (int(w) for w in args.workers.split(",")):
            workdir = Path(tempfile.mkdtemp(prefix=f"kaito-scale-{n}-"))
            print(f"N={n}, {workers} workers, in {workdir}", flush=True)
            results.append(run_controller(n, workdir, args.timeout, workers))
            shutil.rmtree(workdir, ignore_errors=True)
    return publish(render(results, args.note), BEGIN, END, write=not args.no_write)


if __name__ == "__main__":
    raise SystemExit(main())
