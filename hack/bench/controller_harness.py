"""The controller-side test bed shared by the scale benchmark and the chaos tests.

Why one module: the benchmark (hack/bench/controller_scale.py) and the chaos tests (tests/chaos/)
run the same things - a private etcd + kube-apiserver with the project's CRDs, ``kaito-controller``
and ``kaito-provisioner`` (fake cloud, zero delay) as real processes, and a stand-in for KubeRay that
only writes RayService status (no Ray needed: the controller only reads that status). It also reads
the numbers both need: the API server's ``apiserver_request_total`` (with the kubeconfig's token),
a process's /metrics, and its RSS.

Process handling is ``hack.procs.ManagedProcess``; CRD installation and the KubeRay-shaped status
come from the workspace integration tests' helpers (``ws_it_helpers``), so the shape of a Ready
RayService is defined once.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import sys
import threading
import time
import urllib.request
from collections import Counter as Tally
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from controller.api.kinds import MACHINES, RAYSERVICES, WORKSPACES
from controller.api.workspace import Workspace
from controller.runtime import AlreadyExists, Client, Controller, Informer, Request, RestClient, Result
from hack.controlplane.local import ControlPlane
from hack.ports import free_port
from hack.procs import ManagedProcess

REPO = Path(__file__).resolve().parents[2]
for _helpers in ("tests", "tests/integration/workspace", "tests/integration/runtime"):  # as pytest puts them
    sys.path.insert(0, str(REPO / _helpers))
import rt_helpers  # noqa: E402  (the runtime tests' helpers: etcd compaction)
import ws_it_helpers  # noqa: E402  (the workspace tests' helpers: CRDs, manifests, KubeRay status)

NAMESPACES = ws_it_helpers.NAMESPACES
EVENTS = ws_it_helpers.EVENTS
install_crds = ws_it_helpers.install_crds
# the benches count Machines; install_crds also serves NodeClaims, which --node-api=auto would pick
NODE_API = "machine"
workspace_manifest = ws_it_helpers.workspace_manifest
wait_for = ws_it_helpers.wait_for
set_rayservice_running = ws_it_helpers.set_rayservice_running
running_controller = ws_it_helpers.running_controller  # the workspace controller in this process
etcd_compact = rt_helpers.etcd_compact  # (etcd_url) -> the revision compacted at

SYSTEM_NS = "kaito-system"
QUIET_ENV = {"PYTHONWARNINGS": "ignore", "LOG_LEVEL": "WARNING"}


# --- the cluster --------------------------------------------------------------------------------------


def start_cluster(workdir: Path, extra_apiserver_args: Iterable[str] = ()) -> tuple[ControlPlane, Client]:
    """A private control plane with the CRDs installed and the kaito-system namespace."""
    import warnings

    warnings.filterwarnings("ignore", message="Unverified HTTPS request")
    cp = ControlPlane(workdir, extra_apiserver_args=list(extra_apiserver_args)).start()
    client = RestClient.from_kubeconfig(str(cp.kubeconfig))
    install_crds(client)
    with contextlib.suppress(AlreadyExists):
        client.create(NAMESPACES, {"metadata": {"name": SYSTEM_NS}})
    return cp, client


def ensure_namespace(client: Client, name: str) -> str:
    with contextlib.suppress(AlreadyExists):
        client.create(NAMESPACES, {"metadata": {"name": name}})
    return name


# --- processes ----------------------------------------------------------------------------------------


@dataclass
class Proc:
    """A kaito process with its ports; ``metrics()`` scrapes it, ``rss_mib()`` reads its memory."""

    mp: ManagedProcess
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        assert self.mp.proc is not None
        return self.mp.proc.pid

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['metrics']}/metrics", timeout=10) as r:
            return r.read().decode()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return parse_metrics(self.metrics_text())

    def healthy(self) -> bool:
        from hack.procs import http_ok

        return http_ok(f"http://127.0.0.1:{self.ports['health']}/healthz")

    def rss_mib(self) -> float:
        return rss_mib(self.pid)


def start_controller(cp: ControlPlane, workdir: Path, name: str = "controller", *, workers: int = 2,
                     leader_elect: bool = False, webhook: bool = False, wait_ready: bool = True,
                     log_level: str = "WARNING", extra_args: tuple[str, ...] = ()) -> Proc:
    """kaito-controller against ``cp``; ``extra_args`` are further flags (an operator's settings)."""
    ports = {"metrics": free_port(), "health": free_port()}
    argv = [sys.executable, "-m", "controller.main", "--kubeconfig", str(cp.kubeconfig),
            "--namespace", SYSTEM_NS, "--workers", str(workers), "--bind-host", "127.0.0.1",
            "--node-api", NODE_API,
            "--metrics-port", str(ports["metrics"]), "--health-port", str(ports["health"]),
            # the rigs mark RayServices ready with no endpoint behind them: nothing to answer the
            # timeline's first request, and asking would only add DNS failures to what is measured
            "--first-request-url", "off"]
    if leader_elect:
        argv.append("--leader-elect")
    if webhook:
        ports["webhook"] = free_port()
        argv += ["--webhook-port", str(ports["webhook"])]
    argv += extra_args
    env = {**QUIET_ENV, "LOG_LEVEL": log_level}
    mp = ManagedProcess(name, argv, workdir / f"{name}.log", env=env, cwd=REPO).start()
    proc = Proc(mp, ports)
    if wait_ready:
        mp.wait_http(f"http://127.0.0.1:{ports['health']}/readyz", timeout=120)
    return proc


def start_provisioner(cp: ControlPlane, workdir: Path, inventory_ns: str = "fake-cloud") -> Proc:
    """kaito-provisioner on the fake cloud with zero boot and ready delay."""
    ports = {"metrics": free_port(), "health": free_port()}
    argv = [sys.executable, "-m", "provisioner.main", "--kubeconfig", str(cp.kubeconfig),
            "--cloud", "fake", "--fake-delay", "0", "--fake-ready-delay", "0",
            "--fake-namespace", inventory_ns, "--no-leader-elect", "--workers", "4", "--node-api", NODE_API,
            "--metrics-port", str(ports["metrics"]), "--health-port", str(ports["health"])]
    mp = ManagedProcess("provisioner", argv, workdir / "provisioner.log", env=QUIET_ENV, cwd=REPO).start()
    mp.wait_http(f"http://127.0.0.1:{ports['health']}/readyz", timeout=120)
    return Proc(mp, ports)


# --- KubeRay, status only -----------------------------------------------------------------------------


class FakeKubeRay:
    """Marks every RayService Ready the way KubeRay reports it (``set_rayservice_running``).

    A runtime Controller in this process: informer -> queue -> ``reconcile``. ``hold`` names
    RayServices ("ns/name") to leave alone (a test writes their status itself); ``marked`` counts
    the status writes.
    """

    def __init__(self, kubeconfig: Path, workers: int = 2) -> None:
        self.client = RestClient.from_kubeconfig(str(kubeconfig))
        self.informer = Informer(self.client, RAYSERVICES)
        self.hold: set[str] = set()
        self.marked = 0
        self._lock = threading.Lock()
        self.ctrl = Controller(f"fake-kuberay-{id(self):x}", self.reconcile, workers=workers)
        self.ctrl.watch(self.informer)

    def reconcile(self, request: Request) -> Result | None:
        obj = self.informer.store.get(request.key)
        if obj is None or request.key in self.hold:
            return None
        conds = {c.get("type"): c.get("status") for c in (obj.get("status") or {}).get("conditions") or []}
        if conds.get("Ready") == "True":
            return None
        set_rayservice_running(self.client, request.namespace or "", request.name)
        with self._lock:
            self.marked += 1
        return None

    def start(self) -> FakeKubeRay:
        self.informer.start()
        self.ctrl.start()
        return self

    def stop(self) -> None:
        self.ctrl.stop()
        self.informer.stop()
        self.client.close()


# --- numbers ------------------------------------------------------------------------------------------

MetricKey = tuple[str, tuple[tuple[str, str], ...]]


def parse_metrics(text: str) -> dict[MetricKey, float]:
    out: dict[MetricKey, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric_sum(metrics: dict[MetricKey, float], name: str, **labels: str) -> float:
    return sum(v for (n, lbls), v in metrics.items()
               if n == name and all(dict(lbls).get(k) == want for k, want in labels.items()))


def histogram_quantile(metrics: dict[MetricKey, float], name: str, q: float, **labels: str) -> float | None:
    """Prometheus' histogram_quantile over ``name``_bucket (linear inside the bucket)."""
    buckets: dict[float, float] = {}
    for (n, lbls), v in metrics.items():
        d = dict(lbls)
        if n == f"{name}_bucket" and all(d.get(k) == want for k, want in labels.items()):
            le = float(d["le"])
            buckets[le] = buckets.get(le, 0.0) + v
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total == 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_count) / max(count - prev_count, 1e-12))
        prev_le, prev_count = le, count
    return prev_le


def apiserver_requests(cp: ControlPlane) -> Tally:
    """``apiserver_request_total`` by (resource, subresource, verb), read with the kubeconfig's token."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(f"{cp.url}/metrics", headers={"Authorization": f"Bearer {cp.token}"})
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        text = resp.read().decode()
    tally: Tally = Tally()
    for fam in text_string_to_metric_families(text):
        if fam.name != "apiserver_request":
            continue
        for s in fam.samples:
            if s.name != "apiserver_request_total":
                continue
            lb = s.labels
            tally[(lb.get("resource", ""), lb.get("subresource", ""), lb.get("verb", ""))] += int(s.value)
    return tally


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- the state a run must end in ----------------------------------------------------------------------


def expected_children(ws_obj: dict) -> tuple[list[str], str]:
    """What a fault-free controller makes for a workspace: its Machine names and RayService name."""
    from controller.workspace import names
    from controller.workspace.machines import desired_machine_names
    from controller.workspace.plan import plan_for

    ws = Workspace.model_validate(ws_obj)
    plan = plan_for(ws)
    return desired_machine_names(ws, plan.node_count), names.rayservice_name(ws.name)


def cluster_state(client: Client) -> dict[str, object]:
    """Machines by owner, RayServices, Services, Workspaces, fake-cloud instances and their Nodes."""
    from controller.runtime.kinds import CONFIGMAPS, NODES, SERVICES

    machines, _ = client.list(MACHINES)
    by_owner: dict[str, list[str]] = {}
    for m in machines:
        lbl = m["metadata"].get("labels") or {}
        owner = f"{lbl.get('kaito.sh/workspacenamespace', '?')}/{lbl.get('kaito.sh/workspace', '?')}"
        by_owner.setdefault(owner, []).append(m["metadata"]["name"])
    workspaces, _ = client.list(WORKSPACES)
    rayservices, _ = client.list(RAYSERVICES)
    services, _ = client.list(SERVICES, label_selector="kaito.sh/workspace")
    instances, _ = client.list(CONFIGMAPS, label_selector="fake.kaito.sh/instance")
    nodes, _ = client.list(NODES, label_selector="fake.kaito.sh/cloud")
    return {
        "workspaces": {f"{w['metadata']['namespace']}/{w['metadata']['name']}": w for w in workspaces},
        "machines": {k: sorted(v) for k, v in by_owner.items()},
        "machine_count": len(machines),
        "rayservices": sorted(f"{r['metadata']['namespace']}/{r['metadata']['name']}" for r in rayservices),
        "services": sorted(f"{s['metadata']['namespace']}/{s['metadata']['name']}" for s in services),
        "instances": len(instances),
        "nodes": len(nodes),
    }


def ready(ws: dict) -> bool:
    conds = {c["type"]: c["status"] for c in (ws.get("status") or {}).get("conditions") or []}
    return conds.get("WorkspaceReady") == "True"


def now() -> float:
    return time.monotonic()


def env_note() -> str:
    return f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
