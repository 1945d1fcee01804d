"""The stand-in process put together: a Ray head + a controller.runtime Manager running the reconciler.

Used by the CLI (main.py), the demo and the tests (which run it in-process, one per test module).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from controller.api.kinds import RAYSERVICES
from controller.runtime.client import Client
from controller.runtime.controller import Controller
from controller.runtime.kinds import NODES
from controller.runtime.manager import Manager
from hack.kuberay_standin.controller import RayServiceStandin
from hack.kuberay_standin.dashboard import DashboardError, ServeDashboard
from hack.kuberay_standin.ray_head import RayHead, dashboard_up
from hack.kuberay_standin.ray_workers import RayWorkers
from hack.ports import LOOPBACK, free_port

log = logging.getLogger(__name__)

NAME = "kuberay-standin"


class Standin:
    """Start: Ray head (unless attached) -> Serve started with our HTTP options -> informers synced ->
    the whole desired config submitted once (drops apps of RayServices deleted while we were down)
    -> reconcile loop. Stop reverses it: worker nodes, then the head, only if we started it.

    ``worker_nodes``: one Ray worker node per worker Pod of each RayService (``ray_workers.py``);
    needs a head we started (its GCS address). Off, every replica runs on the head.
    """

    def __init__(
        self,
        client: Client,
        head: RayHead,
        ray_address: str | None = None,
        namespace: str | None = None,
        poll_interval: float = 2.0,
        health_port: int | None = None,
        metrics_port: int | None = None,
        state_file: Path | None = None,
        worker_nodes: bool = True,
    ) -> None:
        self.client = client
        self.head = head
        self.ray_address = ray_address
        self.namespace = namespace
        self.poll_interval = poll_interval
        self.state_file = state_file
        self.manager = Manager(
            client,
            name=NAME,
            leader_election=False,
            health_port=health_port,
            metrics_port=metrics_port,
            bind_host=LOOPBACK,
        )
        self.reconciler: RayServiceStandin | None = None
        self.worker_nodes = worker_nodes and not ray_address
        self.workers: RayWorkers | None = None
        self.dashboard: ServeDashboard | None = None

    @property
    def serve_port(self) -> int:
        assert self.head.serve_port is not None
        return self.head.serve_port

    def serve_url(self, namespace: str, name: str) -> str:
        """Where RayService namespace/name's apps answer (``controller.serve_endpoint`` of it)."""
        assert self.reconciler is not None
        return self.reconciler.serve_url(namespace, name)

    def start(self) -> Standin:
        if self.ray_address:
            self.head.attach(self.ray_address)
        else:
            self.head.start()
        try:
            self.dashboard = ServeDashboard(self.head.dashboard_url, headers=self.head.auth_headers)
            self._pick_serve_port()
            informer = self.manager.informer(RAYSERVICES, self.namespace)
            node_informer = None
            if self.worker_nodes:
                node_informer = self.manager.informer(NODES)
                self.workers = RayWorkers(
                    self.head.gcs_address,
                    self.head.dashboard_url,
                    log_dir=Path(self.head.temp_dir or ".") / "standin-workers",
                    python_path=self.head.python_path,
                    extra_env={**self.head.extra_env, **self.head.node_env},
                    headers=self.head.auth_headers,
                    object_store_memory=self.head.object_store_memory,
                )
            self.reconciler = RayServiceStandin(
                self.client,
                RAYSERVICES,
                informer.store,
                self.dashboard,
                serve_host=LOOPBACK,
                serve_port=self.serve_port,
                dashboard_url=self.head.dashboard_url,
                recorder=self.manager.event_recorder(NAME),
                poll_interval=self.poll_interval,
                workers=self.workers,
                nodes=node_informer.store if node_informer is not None else None,
                auth_token=self.head.auth_token if self.head.token_auth else None,
            )
            ctrl = Controller(NAME, self.reconciler, workers=1)
            ctrl.watch(informer)
            self.manager.add_controller(ctrl)
            head = self.head
            self.manager.add_ready_check(
                "ray-dashboard", lambda: dashboard_up(head.dashboard_url, headers=head.auth_headers)
            )
            informer.start()
            if node_informer is not None:
                node_informer.start()
            if not informer.wait_for_sync(120):
                raise TimeoutError("RayService informer did not sync (is the RayService CRD installed?)")
            if node_informer is not None and not node_informer.wait_for_sync(120):
                raise TimeoutError("Node informer did not sync")
            self.reconciler.sync_serve()  # starts Serve, drops stale apps
            self.manager.start()
            self._write_state_file()
        except BaseException:
            self.stop()
            raise
        log.info(
            "KubeRay stand-in running: dashboard %s, Serve http://%s:%d/<namespace>/<name>",
            self.head.dashboard_url,
            LOOPBACK,
            self.serve_port,
        )
        return self

    def _pick_serve_port(self) -> None:
        """Serve's HTTP options are fixed once Serve runs: reuse a running Serve's port when attached."""
        assert self.dashboard is not None
        if self.ray_address:
            try:
                details = self.dashboard.get_details()
            except DashboardError:
                details = {}
            running = bool((details.get("controller_info") or {}).get("node_id"))
            port = (details.get("http_options") or {}).get("port")
            if running and port:
                self.head.serve_port = int(port)
        if self.head.serve_port is None:
            self.head.serve_port = free_port()

    def state(self) -> dict[str, Any]:
        """What the demo and tests need to reach the cluster (also written to --state-file)."""
        sd = self.head.prometheus_sd_file
        return {
            "dashboardURL": self.head.dashboard_url,
            "serveBaseURL": f"http://{LOOPBACK}:{self.serve_port}",
            "gcsAddress": self.head.gcs_address or None,
            "metricsExportPort": self.head.metrics_port,
            "prometheusSDFile": str(sd) if sd else None,
            "rayTempDir": self.head.temp_dir,
            "healthPort": self.manager.health_port,
            "metricsPort": self.manager.metrics_port,
        }

    def _write_state_file(self) -> None:
        if self.state_file is None:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state(), indent=2) + "\n")
        tmp.replace(self.state_file)

    def stop(self) -> None:
        """Stop reconciling, then stop the Ray head if it is ours (apps die with it, as pods would)."""
        try:
            self.manager.stop()
        finally:
            if self.dashboard is not None:
                self.dashboard.close()
            if self.workers is not None:
                self.workers.stop()
            self.head.stop()
