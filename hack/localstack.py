"""The whole operator on one machine: control plane, controllers, Ray, Prometheus.

Why one class: the README's demo, the e2e test and the chaos/scale benchmarks run exactly the
same loop, and must not drift apart. ``LocalStack`` starts each piece as a real process (no
in-process shortcuts), records how long each of its own start steps took (``Timeline``), and
stops everything in reverse order. Where a Workspace's time went is not timed here: the
controller records it in the Workspace's ``status.timeline`` and ``phase_table`` prints that.

The operator is installed with the Helm chart (config/chart/kaito-py), as a user installs it:
RBAC, ServiceAccounts, the webhook's Secret and configuration come from ``helm install``, and
the controller and provisioner run with the args, env and identities their Deployments carry
(hack/chart.py). A loopback proxy stands in for the webhook Service (hack/service_proxy.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from controller.api.workspace import INFERENCE_PHASES
from controller.runtime import RestClient
from controller.runtime.kinds import CUSTOM_RESOURCE_DEFINITIONS, DEPLOYMENTS
from controller.workspace.timeline import parse_time
from hack import prometheus
from hack.chart import Helm, local_values, start_pod
from hack.controlplane.local import ControlPlane
from hack.kuberay_standin import ray_auth
from hack.kuberay_standin.controller import serve_endpoint
from hack.ports import free_port
from hack.procs import ManagedProcess
from hack.service_proxy import ServiceProxy
from hack.upstream_crds import crd_paths as upstream_crd_paths

REPO = Path(__file__).resolve().parents[1]
SYSTEM_NAMESPACE = "kaito-system"
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}


def phase_table(ws: dict) -> str:
    """A Workspace's ``status.timeline`` (written by the controller) as a table: each phase, when
    it ended after the workspace was created, and how long it took; a restart's entries
    (ServingInterrupted, WeightsReloaded) say which restart they are."""
    rows = ["| phase | ended (s after creation) | took (s) |", "|---|---|---|"]
    created = parse_time((ws.get("metadata") or {}).get("creationTimestamp"))
    total = 0.0
    for p in (ws.get("status") or {}).get("timeline") or []:
        total += float(p.get("seconds") or 0)
        end = parse_time(p.get("endedAt"))
        after = (end - created).total_seconds() if end and created else total
        name = f"{p.get('phase')} (restart {p['count']})" if p.get("count") else p.get("phase")
        rows.append(f"| {name} | {after:.1f} | {float(p.get('seconds') or 0):.1f} |")
    return "\n".join(rows)


@dataclass
class Timeline:
    """The local stack's own start steps with wall-clock durations, printed as they finish."""

    t0: float = field(default_factory=time.monotonic)
    phases: list[tuple[str, float]] = field(default_factory=list)
    log: Callable[[str], None] = print
    _last: float = field(default_factory=time.monotonic)

    def mark(self, phase: str) -> float:
        now = time.monotonic()
        took = now - self._last
        self._last = now
        self.phases.append((phase, took))
        self.log(f"[{now - self.t0:6.1f}s] {phase} ({took:.1f}s)")
        return took

    def table(self) -> str:
        rows = ["| phase | seconds |", "|---|---|"]
        rows += [f"| {name} | {took:.1f} |" for name, took in self.phases]
        return "\n".join(rows)


@dataclass
class LocalStack:
    workdir: Path
    fake_node_delay: float = 1.0
    ray_cpus: int = 2
    # logical GPUs of the Ray head: replicas of a real GPU SKU's serve config ask for num_gpus and
    # would stay pending on a head with none; on a host without CUDA they then run on its CPUs
    ray_gpus: int = 0
    log: Callable[[str], None] = print
    timeline: Timeline = field(init=False)
    cp: ControlPlane | None = None
    procs: dict[str, ManagedProcess] = field(default_factory=dict)
    identities: dict[str, Path] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    client: RestClient | None = None
    webhook_service: ServiceProxy | None = None
    # a hub (hack/fake_hf_hub.py) for model ids the catalog lacks: the controller reads them there
    # and the Ray head downloads them from it into hf_home, the stand-in's "node volume" (a real
    # cluster's is controller/workspace/model_cache.py's), which outlives a replica's restart
    hf_endpoint: str | None = None
    # the stand-in's Ray auth token (KubeRay would make one per cluster and keep it in a Secret)
    ray_auth_token: str = field(default_factory=ray_auth.generate_token)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.timeline = Timeline(log=self.log)

    # -- start ---------------------------------------------------------------------------

    def start(self) -> LocalStack:
        self.cp = ControlPlane(self.workdir / "controlplane")
        # the operator's processes run as their service accounts, so config/rbac is exercised
        self.identities = {
            sa: self.cp.service_account_kubeconfig(SYSTEM_NAMESPACE, sa)
            for sa in ("kaito-controller", "kaito-provisioner")
        }
        self.cp.start()
        self.timeline.mark("control plane (etcd + kube-apiserver) ready")
        self.client = RestClient.from_kubeconfig(str(self.cp.kubeconfig))
        # ours (Workspace, Machine) and the upstream CRDs from their Go modules (KubeRay, NodeClaim)
        files = [str(REPO / "config" / "crd"), *map(str, upstream_crd_paths())]
        self.kubectl("apply", "--server-side", *[f"-f={f}" for f in files])
        self.wait_crds_established()
        self.webhook_service = ServiceProxy().start()
        Helm(self.cp.kubeconfig).upgrade_install(
            local_values(f"https://127.0.0.1:{self.webhook_service.port}/validate", self.fake_node_delay,
                         hf_endpoint=self.hf_endpoint),
            namespace=SYSTEM_NAMESPACE,
        )
        self.timeline.mark("CRDs and the Helm chart installed")
        self.start_controller()
        self.start_provisioner()
        self.timeline.mark("controller and provisioner ready")
        self.start_standin()
        self.timeline.mark("KubeRay stand-in and local Ray head ready")
        self.start_prometheus()
        self.timeline.mark("Prometheus ready")
        return self

    @property
    def hf_home(self) -> Path:
        return self.workdir / "model-cache"

    def _ray_env(self) -> dict[str, str]:
        """The Ray head's environment: offline, or online against the local hub only."""
        if self.hf_endpoint is None:
            return RAY_ENV
        return {**RAY_ENV, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
                "HF_ENDPOINT": self.hf_endpoint, "HF_HOME": str(self.hf_home), "HF_HUB_DISABLE_XET": "1"}

    def _py(self, name: str, module: str, args: list[str], kubeconfig: Path | None = None,
            env: dict[str, str] | None = None) -> ManagedProcess:
        assert self.cp is not None
        proc = ManagedProcess(
            name,
            [sys.executable, "-m", module, "--kubeconfig", str(kubeconfig or self.cp.kubeconfig), *args],
            self.workdir / f"{name}.log",
            env={**self._ray_env(), **(env or {})},
            cwd=REPO,
        ).start()
        self.procs[name] = proc
        return proc

    def _pod(self, name: str, deployment: str, overrides: dict[str, str | None]) -> ManagedProcess:
        """One process of a chart Deployment, as its pod would run it (hack/chart.py)."""
        assert self.client is not None
        dep = self.client.get(DEPLOYMENTS, deployment, SYSTEM_NAMESPACE)
        proc = start_pod(self.client, dep, name, self.workdir, self.identities, overrides, env=RAY_ENV)
        self.procs[name] = proc
        return proc

    def start_controller(self, name: str = "controller") -> ManagedProcess:
        for p in ("metrics", "health", "webhook"):
            self.ports.setdefault(f"{name}-{p}", free_port())
        proc = self._pod(name, "kaito-controller", {
            "--metrics-port": str(self.ports[f"{name}-metrics"]),
            "--health-port": str(self.ports[f"{name}-health"]),
            "--webhook-port": str(self.ports[f"{name}-webhook"]),
            "--webhook-service": None,  # no Service here: listen on loopback behind the stand-in
            # no Service routing either: the timeline's first request goes where the stand-in serves
            "--first-request-url": "rayservice-status",
        })
        assert self.webhook_service is not None
        self.webhook_service.set_backends(
            [port for key, port in self.ports.items() if key.endswith("-webhook")])
        proc.wait_http(f"http://127.0.0.1:{self.ports[f'{name}-health']}/readyz", timeout=120)
        return proc

    def start_provisioner(self) -> ManagedProcess:
        for p in ("metrics", "health"):
            self.ports.setdefault(f"provisioner-{p}", free_port())
        proc = self._pod("provisioner", "kaito-provisioner", {
            "--metrics-port": str(self.ports["provisioner-metrics"]),
            "--health-port": str(self.ports["provisioner-health"]),
        })
        proc.wait_http(f"http://127.0.0.1:{self.ports['provisioner-health']}/readyz", timeout=120)
        return proc

    def start_standin(self) -> ManagedProcess:
        for p in ("health", "ray-dashboard", "ray-serve", "ray-metrics"):
            self.ports.setdefault(p, free_port())
        proc = self._py(
            "kuberay-standin",
            "hack.kuberay_standin.main",
            [
                "--health-port", str(self.ports["health"]),
                "--dashboard-port", str(self.ports["ray-dashboard"]),
                "--serve-port", str(self.ports["ray-serve"]),
                "--metrics-export-port", str(self.ports["ray-metrics"]),
                "--num-cpus", str(self.ray_cpus),
                "--num-gpus", str(self.ray_gpus),
            ],
            # the stand-in's Ray runs with token auth, as KubeRay sets it up; we pick the token, so
            # our own dashboard calls can carry it (a client in a cluster reads it from the Secret)
            env={ray_auth.TOKEN_ENV: self.ray_auth_token},
        )
        proc.wait_http(f"http://127.0.0.1:{self.ports['health']}/readyz", timeout=180)
        return proc

    def start_prometheus(self) -> None:
        self.ports["prometheus"] = free_port()
        targets = {
            "kaito-controller": f"127.0.0.1:{self.ports['controller-metrics']}",
            "kaito-provisioner": f"127.0.0.1:{self.ports['provisioner-metrics']}",
            "ray-head": f"127.0.0.1:{self.ports['ray-metrics']}",
        }
        self.procs["prometheus"] = prometheus.start(self.workdir, self.ports["prometheus"], targets)

    # -- use -----------------------------------------------------------------------------

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['ray-dashboard']}"

    def wait_crds_established(self, timeout: float = 60.0) -> None:
        """Every CRD Established. Not ``kubectl wait``: it fails outright on a CRD whose status the
        server has not written yet, which the large upstream CRDs make likely."""
        assert self.client is not None
        deadline = time.monotonic() + timeout
        while True:
            items, _ = self.client.list(CUSTOM_RESOURCE_DEFINITIONS)
            pending = [c["metadata"]["name"] for c in items if not any(
                k.get("type") == "Established" and k.get("status") == "True"
                for k in (c.get("status") or {}).get("conditions") or [])]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRDs not established after {timeout:.0f}s: {', '.join(pending)}")
            time.sleep(0.5)

    def kubectl(self, *args: str, check: bool = True) -> str:
        assert self.cp is not None
        res = subprocess.run(
            ["kubectl", "--kubeconfig", str(self.cp.kubeconfig), *args], capture_output=True, text=True
        )
        if check and res.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {res.stderr.strip()}")
        return res.stdout + (res.stderr if res.returncode != 0 else "")

    def get_json(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def wait_workspace(self, name: str, namespace: str = "default", timeout: float = 600.0) -> dict:
        """Wait for WorkspaceReady, printing each condition as it changes (progress, not silence;
        the timing is the controller's, in ``status.timeline``)."""
        seen: dict[str, tuple[str, str]] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ws = self.get_json("workspace", name, "-n", namespace)
            for cond in ws.get("status", {}).get("conditions", []):
                now = (cond.get("status", ""), cond.get("message", ""))
                before = seen.get(cond["type"])
                if before == now:
                    continue
                seen[cond["type"]] = now
                self.log(f"         {cond['type']}={now[0]}: {now[1]}")
            if seen.get("WorkspaceReady", ("",))[0] == "True":
                return ws
            for proc in self.procs.values():
                if not proc.running:
                    raise RuntimeError(f"{proc.name} died while waiting:\n{proc.log_tail()}")
            time.sleep(1.0)
        raise TimeoutError(f"workspace {namespace}/{name} not ready after {timeout:.0f}s: {seen}")

    def wait_timeline(self, name: str, namespace: str = "default", timeout: float = 120.0) -> dict:
        """The workspace once its ``status.timeline`` has every phase (the last, the first request
        answered, is recorded by the controller shortly after WorkspaceReady)."""
        deadline = time.monotonic() + timeout
        while True:
            ws = self.get_json("workspace", name, "-n", namespace)
            have = {p.get("phase") for p in (ws.get("status") or {}).get("timeline") or []}
            if have >= set(INFERENCE_PHASES):
                return ws
            if time.monotonic() >= deadline:
                raise TimeoutError(f"workspace {namespace}/{name}: timeline has only {sorted(have)}")
            time.sleep(0.5)

    def serve_url(self, name: str, namespace: str = "default") -> str:
        """The local address of the workspace's endpoint, as the stand-in published it."""
        rs = self.get_json("rayservice", name, "-n", namespace)
        url = serve_endpoint(rs)
        if not url:
            raise RuntimeError(f"RayService {namespace}/{name} has no local serve URL in its status")
        return url.rstrip("/")

    def chat(self, url: str, prompt: str, max_new_tokens: int = 16, timeout: float = 120.0,
             **generate_kwargs: object) -> dict:
        """Kaito's ``/chat``; ``generate_kwargs`` beyond the length, e.g. ``do_sample=False`` (greedy:
        the legacy API samples by default, as Kaito's does)."""
        kwargs = {"max_new_tokens": max_new_tokens, **generate_kwargs}
        body = json.dumps({"prompt": prompt, "generate_kwargs": kwargs}).encode()
        req = urllib.request.Request(
            f"{url}/chat", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.load(resp)

    def serve_applications(self) -> dict:
        """Ray Serve's view of the running apps, from the dashboard's REST API."""
        req = urllib.request.Request(f"{self.dashboard_url}/api/serve/applications/",
                                     headers=ray_auth.headers(self.ray_auth_token))
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp).get("applications") or {}

    def promql(self, query: str) -> list[dict]:
        return prometheus.query(self.ports["prometheus"], query)

    def readiness_series(self, name: str, namespace: str, timeout: float = 60.0) -> dict[str, str]:
        """``kaito_workspace_ready`` of one workspace by condition, once Prometheus reads it Ready.

        Scrapes lag the status by up to an interval, so right after WorkspaceReady the newest
        sample may still say 0; wait for the 1 (returns the last reading if it never comes).
        """
        query = f'kaito_workspace_ready{{name="{name}",namespace="{namespace}"}}'
        deadline = time.monotonic() + timeout
        while True:
            ready = {s["metric"].get("condition", ""): s["value"][1] for s in self.promql(query)}
            if ready.get("WorkspaceReady") == "1" or time.monotonic() >= deadline:
                return ready
            time.sleep(1.0)

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            self.procs[name].stop()
        if self.webhook_service is not None:
            self.webhook_service.stop()
        if self.client is not None:
            self.client.close()
        if self.cp is not None:
            self.cp.stop()
        self.log("stopped: processes, Ray head, kube-apiserver and etcd")
