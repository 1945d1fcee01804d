"""One local Ray head on loopback: start it (or attach to one), wait for its dashboard, stop it.

Why each choice:

* ``ray start --head --block`` as our child, in its own process group, rather than ``ray start``
  + ``ray stop``: ``ray stop`` kills *every* Ray process of the user on the machine, and this
  machine is shared (other engineers' tests run their own Ray). With ``--block`` the CLI stays in
  the foreground, owns the GCS/raylet/dashboard it spawned (and a reaper that fate-shares them),
  and cleans them up on SIGTERM; we signal only our own process group.
* Every port that has a fixed default (GCS 6379, dashboard 8265, client server 10001, dashboard
  agent 52365, ...) is given a free one, so two stand-ins (or a stand-in and a test's own Ray)
  never collide.
* A private ``--temp-dir``: sessions, logs and ``ray_current_cluster`` stay ours, so a bare
  ``ray.init()`` elsewhere on the machine never attaches to this cluster by accident. It is kept
  short because Ray puts unix sockets under it (108-byte path limit).
* ``--num-gpus 0`` by default: nodes are fake and replicas run on CPU. A serve config that asks
  for GPUs (``num_gpus``, GPU placement-group bundles) stays DEPLOYING forever on such a head, as
  on a real cluster without GPU workers; ``num_gpus``/``resources`` declare logical GPUs or custom
  resources (Ray does not check that they exist) when a demo needs such a config to schedule.
* Ray's token auth (``ray_auth.py``), as KubeRay v1.6 turns it on: ``RAY_AUTH_MODE=token`` and
  the head's ``auth_token`` (generated unless given) in the head's and every node's environment,
  whatever the caller's environment says (the tests' own Ray runs with ``RAY_AUTH_MODE=disabled``),
  and the token on every dashboard call (``auth_headers``). ``token_auth=False``:
  ``RAY_AUTH_MODE=disabled`` (Ray 2.60 would otherwise turn auth on with a token of its own in
  ``~/.ray``, which the stand-in does not know).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from hack.kuberay_standin import ray_auth
from hack.ports import LOOPBACK, free_ports
from rayserve.spec import CLUSTER_ENV, HAPROXY_ENV

log = logging.getLogger(__name__)

MAX_TEMP_DIR_BYTES = 40  # + ~63 bytes of session/socket path must stay under Linux's 107
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # On SIGTERM the head would first "drain" for up to 30 s (for Kubernetes pod deletion during
    # RayService upgrades); a local stand-in has nobody to drain for.
    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    # what the controller puts in every Ray container's env (controller/workspace/inference.py
    # serve_env), which this stand-in does not read from the pod templates: Serve's proxy settings
    **CLUSTER_ENV,
}


def ray_binary() -> str:
    """The ``ray`` CLI of the running interpreter's environment (not whatever is first on PATH)."""
    beside = Path(sys.executable).with_name("ray")
    if beside.exists():
        return str(beside)
    found = shutil.which("ray")
    if found is None:
        raise RuntimeError("the 'ray' CLI is not installed in this environment (pip install 'ray[serve]')")
    return found


def haproxy_wanted(env: Mapping[str, str]) -> bool:
    """Whether ``env`` (a Ray's environment) turns Serve's HAProxy on (``HAPROXY_ENV``)."""
    return all(env.get(k) == v for k, v in HAPROXY_ENV.items())


def haproxy_env() -> dict[str, str]:
    """Where Serve's HAProxy (``rayserve.spec.HAPROXY_ENV``) of one local Ray keeps its files, and
    its stats and metrics ports.

    Why: HAProxy mode writes its config, admin socket and server state under /tmp/haproxy-serve and
    listens on ports 8404 (stats) and 9101 (metrics). In Kubernetes every pod has its own /tmp and
    ports; on one machine two Rays (a test's and the demo's) would overwrite each other's config
    and fail to bind. Each local Ray gets its own directory and free ports instead. The directory
    is a short one in /tmp (``RAY_SERVE_HAPROXY_SERVER_STATE_BASE`` names it; remove it when the
    Ray stops): HAProxy puts its sockets in a 56-character subdirectory per node and refuses socket
    paths over 97 bytes."""
    d = Path(tempfile.mkdtemp(prefix="hap-", dir="/tmp"))
    stats, metrics = free_ports(2)
    return {
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(d / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(d / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(d),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(d / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(d / "metrics.sock"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics),
    }


def ray_env(python_path: list[str], extra: dict[str, str]) -> dict[str, str]:
    """The environment of a ``ray start``: ours, Ray's settings (RAY_ENV), ``extra``, and
    ``python_path`` first on PYTHONPATH so the serve configs' ``import_path``s resolve in every
    worker process the node starts."""
    env = {**os.environ, **RAY_ENV, **extra}
    paths = [*python_path, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def stop_process_group(proc: subprocess.Popen, grace: float, what: str) -> None:
    """Stop a ``ray start --block`` we started in its own session: SIGTERM the CLI only (it shuts
    its children down in order: raylet, then GCS...), then SIGKILL whatever is left of its process
    group (workers may linger a moment after the CLI exits). Never ``ray stop``: that kills every
    Ray of the user on the machine."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs; killing it", what, grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


START_RETRIES = 2  # fresh starts after one that exited during start-up


class HeadExited(RuntimeError):
    """``ray start`` exited before its dashboard answered (most often: a port was lost)."""


def _read_from(path: Path, offset: int) -> str:
    """What was written to ``path`` after ``offset`` (this start's output, not earlier ones')."""
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def dashboard_up(dashboard_url: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> bool:
    """True when the dashboard's Serve REST API answers (the head is usable for deploys)."""
    try:
        resp = httpx.get(f"{dashboard_url}/api/serve/applications/", timeout=timeout, headers=headers)
    except httpx.HTTPError:
        return False
    return resp.status_code == 200


@dataclass
class RayHead:
    """A Ray head the stand-in deploys to.

    ``start()`` launches one; ``attach(dashboard_url)`` uses a running one (its Serve HTTP port is
    read from Serve if Serve runs, else ``serve_port`` or a free port is used when we first deploy).
    """

    num_cpus: int = 2
    num_gpus: int = 0
    resources: dict[str, float] = field(default_factory=dict)
    object_store_memory: int = 100 * 1024 * 1024
    python_path: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    # Ports and the temp dir are free/fresh unless given (the demo fixes some to wire Prometheus).
    serve_port: int | None = None
    dashboard_port: int | None = None
    metrics_port: int | None = None
    temp_dir: str | None = None
    startup_timeout: float = 90.0
    # Ray's token auth on the head and its nodes; the token is generated at start unless given
    token_auth: bool = True
    auth_token: str | None = None

    dashboard_url: str = ""
    gcs_address: str = ""
    proc: subprocess.Popen | None = None
    owned: bool = False
    _log_file: object | None = None
    _created_temp_dir: str | None = None  # ours to remove on stop (a requested dir is the caller's)
    _haproxy_dir: str | None = None  # Serve's HAProxy files (haproxy_env), removed on stop

    @property
    def node_env(self) -> dict[str, str]:
        """Ray's auth settings for a ``ray start`` joining this head (the head's own, too)."""
        return ray_auth.node_env(self.auth_token if self.token_auth else None)

    @property
    def auth_headers(self) -> dict[str, str]:
        """What a dashboard request to this head carries (KubeRay's header; none without auth)."""
        return ray_auth.headers(self.auth_token if self.token_auth else None)

    # --- lifecycle ------------------------------------------------------------------------------
    def _short_temp_dir(self) -> str:
        """The --temp-dir to give Ray. Its unix sockets live at
        ``<temp>/session_<date>_<pid>/sockets/plasma_store`` (~63 more bytes), Linux caps such
        paths at 107 bytes, and Ray resolves symlinks. So a long requested dir (a pytest tmp_path)
        becomes a symlink to a short real dir in /tmp: sessions and logs are still found at the
        requested path. (A requested dir that already has content is left alone and Ray uses the
        short dir directly.)"""
        if self.temp_dir and len(self.temp_dir.encode()) <= MAX_TEMP_DIR_BYTES:
            Path(self.temp_dir).mkdir(parents=True, exist_ok=True)
            return self.temp_dir
        short = tempfile.mkdtemp(prefix="krs-", dir="/tmp")
        if not self.temp_dir:
            self.temp_dir = self._created_temp_dir = short
            return short
        requested = Path(self.temp_dir)
        requested.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            requested.rmdir()  # only if it is empty
        if requested.exists():
            log.warning(
                "Ray temp dir %s is too long for Ray's sockets and not empty; using %s", requested, short
            )
            self.temp_dir = short
        else:
            requested.symlink_to(short, target_is_directory=True)
        return short

    def start(self) -> RayHead:
        """Start ``ray start --head --block`` on loopback and wait until Serve's REST API answers.

        A port we picked can be taken by someone else's connection before Ray binds it (it is
        the kernel's ephemeral range); a Ray process then dies at start-up ("address already in
        use", in its own log under the session dir), ``ray start --block`` exits, and we start
        again on fresh ports (``START_RETRIES`` times), as a Pod restarts. Any exit during
        start-up is retried so: the CLI's own output does not always say which port was lost."""
        requested = (self.temp_dir, self.serve_port, self.metrics_port)
        for attempt in range(1, START_RETRIES + 2):
            try:
                return self._start_once()
            except HeadExited as e:
                if attempt > START_RETRIES:
                    raise RuntimeError(str(e)) from None
                log.warning("Ray head exited at start-up (attempt %d); starting again: %s", attempt, e)
                self.temp_dir, self.serve_port, self.metrics_port = requested  # fresh ones next time
        raise AssertionError("unreachable")

    def _start_once(self) -> RayHead:
        # the raylet's own gRPC ports (node and object manager) are left to Ray: it binds port 0
        # itself, so no one can take them between our pick and its bind
        (gcs, dash, client, agent_http, agent_grpc, runtime_env, metrics, serve) = free_ports(8)
        dash = self.dashboard_port or dash
        self.metrics_port = self.metrics_port or metrics
        self.serve_port = self.serve_port or serve
        ray_temp_dir = self._short_temp_dir()
        argv = [
            ray_binary(),
            "start",
            "--head",
            "--block",
            f"--node-ip-address={LOOPBACK}",
            f"--port={gcs}",
            "--include-dashboard=true",
            f"--dashboard-host={LOOPBACK}",
            f"--dashboard-port={dash}",
            f"--ray-client-server-port={client}",
            f"--dashboard-agent-listen-port={agent_http}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={runtime_env}",
            f"--metrics-export-port={self.metrics_port}",
            f"--num-cpus={self.num_cpus}",
            f"--num-gpus={self.num_gpus}",
            f"--object-store-memory={self.object_store_memory}",
            f"--temp-dir={ray_temp_dir}",
            "--disable-usage-stats",
        ]
        if self.resources:
            argv.append(f"--resources={json.dumps(self.resources)}")
        if self.token_auth and not self.auth_token:
            self.auth_token = ray_auth.generate_token()
        # HAProxy's own files and ports, only for a Ray that runs it (--serve-haproxy)
        haproxy = haproxy_env() if haproxy_wanted({**os.environ, **self.extra_env}) else {}
        self._haproxy_dir = haproxy.get("RAY_SERVE_HAPROXY_SERVER_STATE_BASE")
        env = ray_env(self.python_path, {**haproxy, **self.extra_env, **self.node_env})
        log_path = self.log_path or Path(self.temp_dir) / "ray-start.log"
        self._log_file = open(log_path, "ab")  # noqa: SIM115 - lives as long as the child
        log.info("starting Ray head: %s (log %s)", " ".join(argv), log_path)
        start_offset = log_path.stat().st_size
        self.proc = subprocess.Popen(
            argv, stdout=self._log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self.owned = True
        self.dashboard_url = f"http://{LOOPBACK}:{dash}"
        self.gcs_address = f"{LOOPBACK}:{gcs}"
        deadline = time.monotonic() + self.startup_timeout
        while not dashboard_up(self.dashboard_url, headers=self.auth_headers):
            if self.proc.poll() is not None:
                code = self.proc.returncode
                tail = _read_from(log_path, start_offset)[-3000:]
                self.stop()
                raise HeadExited(f"ray start exited ({code}):\n{tail}")
            if time.monotonic() > deadline:
                self.stop()
                tail = _read_from(log_path, start_offset)[-3000:]
                raise TimeoutError(f"Ray dashboard not up within {self.startup_timeout:.0f}s:\n{tail}")
            time.sleep(0.3)
        log.info("Ray head up: dashboard %s, gcs %s", self.dashboard_url, self.gcs_address)
        return self

    def attach(self, dashboard_url: str) -> RayHead:
        """Use a running cluster; its dashboard must answer now."""
        self.dashboard_url = dashboard_url.rstrip("/")
        if "://" not in self.dashboard_url:
            self.dashboard_url = f"http://{self.dashboard_url}"
        if not dashboard_up(self.dashboard_url, timeout=10, headers=self.auth_headers):
            raise RuntimeError(f"no Ray dashboard answers at {self.dashboard_url}")
        self.owned = False
        return self

    @property
    def running(self) -> bool:
        if not self.owned:
            return True
        return self.proc is not None and self.proc.poll() is None

    @property
    def prometheus_sd_file(self) -> Path | None:
        """Ray's Prometheus service-discovery file (node, autoscaler and dashboard metric ports)."""
        if not self.temp_dir:
            return None
        return Path(self.temp_dir) / "prom_metrics_service_discovery.json"

    def stop(self, grace: float = 20.0) -> None:
        """Stop the head we started (never one we attached to): SIGTERM the ``ray start`` CLI (it
        stops its GCS, raylet, dashboard and workers), then SIGKILL whatever is left in its process
        group; remove the temp dir if we made it."""
        if not self.owned or self.proc is None:
            return
        proc, self.proc = self.proc, None
        stop_process_group(proc, grace, "Ray head")
        if self._log_file is not None:
            with contextlib.suppress(Exception):
                self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None
        if self._created_temp_dir is not None:
            shutil.rmtree(self._created_temp_dir, ignore_errors=True)
            self._created_temp_dir = None
        if self._haproxy_dir is not None:
            shutil.rmtree(self._haproxy_dir, ignore_errors=True)
            self._haproxy_dir = None
        log.info("Ray head stopped")
