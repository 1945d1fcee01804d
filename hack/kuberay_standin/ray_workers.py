"""One local Ray worker node per worker Pod (``workerpods.WorkerPod``), joined to the stand-in's head.

Why real nodes and not one big head: a multi-node Workspace's pipeline stages must sit on
different Ray nodes, so that placement groups, activations crossing nodes and a node dying behave
as on GPU nodes. Each worker is ``ray start --address=<head gcs> --block`` as our child, in its own
process group (like the head, ``ray_head.py``), with the Pod's CPUs, GPUs and custom resources as
logical resources (Ray does not check that GPUs exist; the CPUs run the model) and labels naming
its Pod and Kubernetes node.

``sync(desired)`` is level-triggered like KubeRay's worker reconciliation: a Pod without a running
node gets one (a node whose processes died is restarted, as KubeRay recreates a deleted Pod), a
node whose Pod is no longer wanted, or changed, is stopped. ``start`` does not wait: a node counts
as ready only once the GCS lists it ALIVE (``ready_pods``), so a reconcile never blocks on Ray.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from hack.kuberay_standin.ray_head import ray_binary, ray_env, stop_process_group
from hack.kuberay_standin.workerpods import LABEL_POD, WorkerPod, label_value
from hack.ports import LOOPBACK, free_ports

# Ray node label: which start of the Pod's node this is (0, 1, ...). A killed node stays ALIVE in
# the GCS until its health checks time out, so the restarted one is told apart by this.
LABEL_INCARNATION = "kaito-standin/incarnation"

log = logging.getLogger(__name__)

NODES_API = "/api/v0/nodes"  # Ray's state API: node id, state, labels
START_TIMEOUT = 60.0  # a node not ALIVE by then no longer holds back the next one


@dataclass
class RayWorkerNode:
    """One running ``ray start --address`` for one Pod."""

    pod: WorkerPod
    proc: subprocess.Popen
    log_file: Any
    restarts: int = 0
    started: float = field(default_factory=time.monotonic)
    seen_alive: bool = False  # the GCS has listed it ALIVE

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    @property
    def gcs_key(self) -> tuple[str, str]:
        """How the GCS's node list names this node: (LABEL_POD, LABEL_INCARNATION) values."""
        return label_value(self.pod.pod), str(self.restarts)


@dataclass
class RayWorkers:
    """The worker nodes of every RayService, on one head (``gcs_address``, ``dashboard_url``)."""

    gcs_address: str
    dashboard_url: str
    log_dir: Path
    python_path: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)  # the head's Ray auth settings among them
    headers: dict[str, str] = field(default_factory=dict)  # of the head's dashboard (its auth token)
    object_store_memory: int = 100 * 1024 * 1024
    stop_grace: float = 20.0
    nodes: dict[str, RayWorkerNode] = field(default_factory=dict)  # by Pod name
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _handed_out: set[int] = field(default_factory=set)

    def _ports(self, n: int) -> list[int]:
        """n free ports never handed to an earlier node: a node binds its ports seconds after we
        pick them, and the kernel may offer a picked but not yet bound port again (the raylet then
        dies with "bind: Address already in use")."""
        while True:
            ports = free_ports(n)
            if not self._handed_out.intersection(ports):
                self._handed_out.update(ports)
                return ports

    def sync(self, desired: list[WorkerPod], alive: set[tuple[str, str]] | None) -> None:
        """Make the running nodes those of ``desired`` (Pods with a node to run on); ``alive`` is
        ``alive_pods()``. One node starts at a time: Ray names a node's sockets and log files in the
        shared session dir by looking for a free name, so two nodes starting together can pick the
        same socket (the later raylet dies: "bind: Address already in use"); the next starts once
        the GCS lists the previous one ALIVE (or it is given up on after ``START_TIMEOUT``)."""
        wanted = {p.pod: p for p in desired if p.node is not None}
        with self._lock:
            for node in self.nodes.values():
                node.seen_alive = node.seen_alive or (alive is not None and node.gcs_key in alive)
            for name in list(self.nodes):
                node = self.nodes[name]
                if wanted.get(name) != node.pod:
                    log.info("stopping Ray worker node of pod %s (no longer wanted or changed)", name)
                    self._stop(self.nodes.pop(name))
            for name, pod in wanted.items():
                node = self.nodes.get(name)
                if node is not None and node.running:
                    continue
                if self._starting():
                    return  # the next sync starts it
                restarts = 0
                if node is not None:
                    restarts = node.restarts + 1
                    log.warning(
                        "Ray worker node of pod %s exited (%s); restarting it, as KubeRay recreates "
                        "the Pod (restart %d)",
                        name,
                        node.proc.returncode,
                        restarts,
                    )
                    self._stop(node)
                self.nodes[name] = self._start(pod, restarts)

    def _starting(self) -> bool:
        """Some node runs but has not registered with the GCS yet (within START_TIMEOUT)."""
        now = time.monotonic()
        return any(
            n.running and not n.seen_alive and now - n.started < START_TIMEOUT for n in self.nodes.values()
        )

    def _start(self, pod: WorkerPod, restarts: int) -> RayWorkerNode:
        # the raylet's node and object manager ports are left to Ray (it binds port 0 itself)
        (metrics, agent_http, agent_grpc, runtime_env) = self._ports(4)
        labels = {**pod.labels, LABEL_INCARNATION: str(restarts)}
        argv = [
            ray_binary(),
            "start",
            f"--address={self.gcs_address}",
            "--block",
            f"--node-ip-address={LOOPBACK}",
            f"--metrics-export-port={metrics}",
            f"--dashboard-agent-listen-port={agent_http}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={runtime_env}",
            f"--num-cpus={pod.num_cpus}",
            f"--num-gpus={pod.num_gpus}",
            f"--object-store-memory={self.object_store_memory}",
            "--labels=" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            "--disable-usage-stats",
        ]
        if pod.resources:
            argv.append(f"--resources={json.dumps(dict(pod.resources))}")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(self.log_dir / f"ray-worker-{pod.pod}.log", "ab")  # noqa: SIM115 - the child's
        log.info("starting Ray worker node for pod %s on node %s: %s", pod.pod, pod.node, " ".join(argv))
        proc = subprocess.Popen(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=ray_env(self.python_path, self.extra_env),
            start_new_session=True,
        )
        return RayWorkerNode(pod, proc, log_file, restarts)

    def _stop(self, node: RayWorkerNode) -> None:
        stop_process_group(node.proc, self.stop_grace, f"Ray worker node of pod {node.pod.pod}")
        node.log_file.close()

    def stop(self) -> None:
        """Stop every worker node (the head stops after them)."""
        with self._lock:
            nodes, self.nodes = list(self.nodes.values()), {}
        for node in nodes:
            self._stop(node)

    # --- what the GCS sees ---------------------------------------------------------------------------
    def alive_pods(self) -> set[tuple[str, str]] | None:
        """``RayWorkerNode.gcs_key`` of each worker node the GCS lists ALIVE; None if it cannot say."""
        try:
            resp = httpx.get(
                f"{self.dashboard_url}{NODES_API}", params={"limit": 1000, "detail": "true"}, timeout=10,
                headers=self.headers,
            )
            resp.raise_for_status()
            rows = ((resp.json().get("data") or {}).get("result") or {}).get("result") or []
        except (httpx.HTTPError, ValueError):
            return None
        alive = set()
        for row in rows:
            labels = row.get("labels") or {}
            if row.get("state") == "ALIVE" and LABEL_POD in labels:
                alive.add((labels[LABEL_POD], labels.get(LABEL_INCARNATION, "")))
        return alive

    def ready_pods(self, pods: list[WorkerPod], alive: set[tuple[str, str]] | None) -> list[WorkerPod]:
        """The Pods of ``pods`` whose node process runs and whose Ray node is ALIVE."""
        with self._lock:
            ready = {
                name
                for name, node in self.nodes.items()
                if node.running and alive is not None and node.gcs_key in alive
            }
        return [p for p in pods if p.pod in ready]

    def process_group(self, pod: str) -> int | None:
        """The process group of ``pod``'s node (tests kill it to play a node failure)."""
        node = self.nodes.get(pod)
        return node.proc.pid if node is not None and node.running else None
