"""Start and stop a real etcd + kube-apiserver (+ GC controller-manager) on loopback.

Why: integration tests, benchmarks and the demo all need real API semantics (resourceVersion,
409 conflicts, watches, 410 Gone, CRD schema + CEL validation, admission webhooks) that no
mock reproduces. The binaries are built from the Go module proxy by ``build.sh`` and cached
under ``~/.cache/kaito-py/bin``; starting them takes seconds.

Auth is a static bearer token for a ``system:masters`` user, the simplest thing the Python
client can use. The data directory outlives an apiserver restart, so tests can restart the
apiserver (breaking every watch) without losing objects.

CLI: ``python -m hack.controlplane.local up --dir DIR`` starts both and prints the kubeconfig
path; it stays in the foreground until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from hack.ports import free_port

HERE = Path(__file__).resolve().parent


def bin_dir() -> Path:
    return Path(os.environ.get("KAITO_BIN_DIR", Path.home() / ".cache" / "kaito-py" / "bin"))


def ensure_binaries() -> Path:
    """Build (or reuse) kube-apiserver and etcd; fail loudly if that is impossible."""
    out = bin_dir()
    built = all((out / b).exists() for b in ("kube-apiserver", "kube-controller-manager", "etcd"))
    if not built and shutil.which("go") is None:
        raise RuntimeError(
            "kube-apiserver/etcd are not built and 'go' is not on PATH: install Go >= 1.26 "
            f"and run {HERE / 'build.sh'}"
        )
    subprocess.run([str(HERE / "build.sh")], check=True, env={**os.environ, "KAITO_BIN_DIR": str(out)})
    return out


@dataclass
class ControlPlane:
    """One etcd + one kube-apiserver, with a kubeconfig for a cluster-admin token."""

    workdir: Path
    etcd_port: int = field(default_factory=free_port)
    etcd_peer_port: int = field(default_factory=free_port)
    apiserver_port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    extra_apiserver_args: list[str] = field(default_factory=list)
    # garbage collection (ownerReferences) and namespace deletion, as a real cluster has them
    with_controller_manager: bool = True
    _etcd: subprocess.Popen | None = None
    _apiserver: subprocess.Popen | None = None
    _kcm: subprocess.Popen | None = None
    _users: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> ControlPlane:
        bins = ensure_binaries()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_pki()
        self._write_kubeconfig()
        t0 = time.monotonic()
        self.start_etcd(bins)
        self.start_apiserver(bins, timeout=max(5.0, timeout - (time.monotonic() - t0)))
        if self.with_controller_manager:
            self.start_controller_manager(bins)
        return self

    def start_controller_manager(self, bins: Path | None = None) -> None:
        """Only the garbage collector and namespace controllers: no kubelet or scheduler exists."""
        bins = bins or bin_dir()
        log = open(self.workdir / "controller-manager.log", "ab")  # noqa: SIM115
        self._kcm = subprocess.Popen(
            [
                str(bins / "kube-controller-manager"),
                "--kubeconfig", str(self.kubeconfig),
                "--controllers", "garbagecollector,namespace",
                "--leader-elect=false", "--use-service-account-credentials=false",
                "--bind-address", "127.0.0.1", "--secure-port", str(free_port()),
                "--concurrent-gc-syncs", "5",
            ],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def start_etcd(self, bins: Path | None = None) -> None:
        bins = bins or bin_dir()
        log = open(self.workdir / "etcd.log", "ab")  # noqa: SIM115 - owned by the child's lifetime
        self._etcd = subprocess.Popen(
            [
                str(bins / "etcd"),
                "--data-dir", str(self.workdir / "etcd"),
                "--listen-client-urls", self.etcd_url,
                "--advertise-client-urls", self.etcd_url,
                "--listen-peer-urls", f"http://127.0.0.1:{self.etcd_peer_port}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.etcd_peer_port}",
                "--initial-cluster", f"default=http://127.0.0.1:{self.etcd_peer_port}",
                "--unsafe-no-fsync", "--log-level", "warn", "--quota-backend-bytes", str(2 << 30),
            ],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._wait(lambda: _http_ok(f"{self.etcd_url}/health"), 20.0, "etcd", self.workdir / "etcd.log")

    def start_apiserver(self, bins: Path | None = None, timeout: float = 60.0) -> None:
        bins = bins or bin_dir()
        log = open(self.workdir / "apiserver.log", "ab")  # noqa: SIM115
        self._apiserver = subprocess.Popen(
            [
                str(bins / "kube-apiserver"),
                "--etcd-servers", self.etcd_url,
                "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
                "--secure-port", str(self.apiserver_port),
                "--cert-dir", str(self.pki),
                "--service-cluster-ip-range", "10.0.0.0/16",  # room for ~65k Services (1000-Workspace bench)
                "--authorization-mode", "RBAC",
                "--token-auth-file", str(self.pki / "tokens.csv"),
                "--service-account-issuer", "https://kubernetes.default.svc",
                "--service-account-key-file", str(self.pki / "sa.pub"),
                "--service-account-signing-key-file", str(self.pki / "sa.key"),
                "--disable-admission-plugins", "ServiceAccount",
                "--allow-privileged", "--endpoint-reconciler-type", "none",
                *self.extra_apiserver_args,
            ],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._wait(self.ready, timeout, "kube-apiserver", self.workdir / "apiserver.log")

    def stop_apiserver(self) -> None:
        _terminate(self._apiserver)
        self._apiserver = None

    def kill_apiserver(self) -> None:
        """SIGKILL the apiserver: a crash, for chaos tests (``stop_apiserver`` shuts down gracefully,
        which can take seconds while clients still get answers)."""
        if self._apiserver is not None and self._apiserver.poll() is None:
            self._apiserver.kill()
            self._apiserver.wait()
        self._apiserver = None

    def restart_apiserver(self, timeout: float = 60.0) -> None:
        """Kill and start the apiserver on the same port and data: every open watch breaks."""
        self.stop_apiserver()
        self.start_apiserver(timeout=timeout)

    def stop(self) -> None:
        _terminate(self._kcm)
        self._kcm = None
        self.stop_apiserver()
        _terminate(self._etcd)
        self._etcd = None

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- probes ------------------------------------------------------------------------------

    def ready(self) -> bool:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        req = urllib.request.Request(f"{self.url}/readyz", headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def _wait(self, probe, timeout: float, what: str, log: Path) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if probe():
                return
            proc = self._apiserver if what == "kube-apiserver" else self._etcd
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.2)
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise RuntimeError(f"{what} did not become ready within {timeout:.0f}s; last log lines:\n{tail}")

    # -- files -------------------------------------------------------------------------------

    def _write_pki(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.pki.mkdir(parents=True, exist_ok=True)
        if not (self.pki / "sa.key").exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            (self.pki / "sa.key").write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.TraditionalOpenSSL,
                    serialization.NoEncryption(),
                )
            )
            (self.pki / "sa.pub").write_bytes(
                key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
        (self.pki / "tokens.csv").write_text(
            f'{self.token},admin,admin,"system:masters"\n'
            + "".join(f'{tok},{user},{user},"{groups}"\n' for user, (tok, groups) in self._users.items())
        )

    def service_account_kubeconfig(self, namespace: str, name: str) -> Path:
        """A kubeconfig that authenticates as ``system:serviceaccount:<ns>:<name>``.

        Why: running each operator process under its own identity makes the RBAC manifests in
        the chart's RBAC part of what the demo and e2e test exercise; a missing rule fails loudly.
        Static tokens are read at apiserver start, so call this before ``start()``.
        """
        user = f"system:serviceaccount:{namespace}:{name}"
        token = secrets.token_hex(16)
        self._users[user] = (token, f"system:serviceaccounts,system:serviceaccounts:{namespace}")
        path = self.workdir / f"kubeconfig-{namespace}-{name}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        path.write_text(self._kubeconfig_text(token))
        return path

    def _write_kubeconfig(self) -> None:
        self.kubeconfig.write_text(self._kubeconfig_text(self.token))

    def _kubeconfig_text(self, token: str) -> str:
        return (
            f"""apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: {self.url}
    insecure-skip-tls-verify: true
users:
- name: user
  user:
    token: {token}
contexts:
- name: local
  context: {{cluster: local, user: user, namespace: default}}
current-context: local
"""
        )


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _terminate(proc: subprocess.Popen | None, grace: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["build", "up"])
    ap.add_argument("--dir", type=Path, default=None, help="work dir (default: a temp dir)")
    args = ap.parse_args(argv)
    if args.command == "build":
        ensure_binaries()
        return 0
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="kaito-cp-"))
    cp = ControlPlane(workdir)
    t0 = time.monotonic()
    cp.start()
    print(f"control plane ready in {time.monotonic() - t0:.1f}s; KUBECONFIG={cp.kubeconfig}", flush=True)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stop:
        time.sleep(0.5)
    cp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
