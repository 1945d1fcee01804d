"""The Helm chart as a local install: helm against the local API server, pods as local processes.

Why: what a user installs (config/chart/kaito-py) must be what the demo and the e2e test run.
So the local loop ``helm install``s the chart into the local control plane, then starts each
operator process from its Deployment as the API server stored it: the container's command and
args (with ``$(VAR)`` expanded from its env, as the kubelet does), its env, its ServiceAccount's
identity (RBAC is the chart's), and its Secret volumes written to a directory (as the kubelet
mounts them). Only what a node would give a pod differs: each process gets its own free ports
(pods have their own IPs), and the entry-point script runs as ``python -m`` of the same module.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from controller.runtime.kinds import SECRETS
from hack.procs import ManagedProcess

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "config" / "chart" / "kaito-py"
# console scripts of pyproject.toml -> the module each one runs (a pod runs the script)
ENTRY_POINTS = {"kaito-controller": "controller.main", "kaito-provisioner": "provisioner.main"}


class ChartError(RuntimeError):
    """helm failed or the chart's objects are not what the local loop can run: the message says which."""


def helm_binary() -> Path:
    """The helm that hack/helm/build.sh built; a missing one is an error, never a skip."""
    path = Path(os.environ.get("KAITO_BIN_DIR", Path.home() / ".cache" / "kaito-py" / "bin")) / "helm"
    if not path.is_file():
        raise ChartError(f"{path} is missing: build it with hack/helm/build.sh (hack/test.sh does)")
    return path


@dataclass
class Helm:
    """helm with one kubeconfig; every call fails loudly with helm's own message."""

    kubeconfig: Path | None = None
    binary: Path = field(default_factory=helm_binary)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.binary), *args]
        if self.kubeconfig is not None:
            cmd += ["--kubeconfig", str(self.kubeconfig)]
        # helm keeps caches and repository config under $HOME; a scratch HOME keeps runs apart
        env = {**os.environ, "HELM_CACHE_HOME": tempfile.gettempdir() + "/kaito-helm-cache",
               "HELM_CONFIG_HOME": tempfile.gettempdir() + "/kaito-helm-config"}
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        if check and res.returncode != 0:
            raise ChartError(f"helm {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
        return res

    def _values_file(self, values: dict[str, Any]) -> str:
        fd, path = tempfile.mkstemp(prefix="kaito-values-", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(values, f)
        return path

    def template(self, values: dict[str, Any], release: str = "kaito", namespace: str = "kaito-system",
                 *extra: str) -> list[dict[str, Any]]:
        """The rendered objects (no cluster needed)."""
        path = self._values_file(values)
        try:
            out = self.run("template", release, str(CHART), "-n", namespace, "-f", path, *extra).stdout
        finally:
            os.unlink(path)
        return [doc for doc in yaml.safe_load_all(out) if doc]

    def upgrade_install(self, values: dict[str, Any], release: str = "kaito",
                        namespace: str = "kaito-system") -> str:
        """``helm upgrade --install`` (no --wait: no kubelet runs the pods here)."""
        path = self._values_file(values)
        try:
            return self.run("upgrade", "--install", release, str(CHART), "-n", namespace,
                            "--create-namespace", "-f", path).stdout
        finally:
            os.unlink(path)

    def uninstall(self, release: str = "kaito", namespace: str = "kaito-system") -> str:
        return self.run("uninstall", release, "-n", namespace, "--wait").stdout


def local_values(webhook_url: str, fake_node_delay: float = 1.0,
                 controller_replicas: int = 1, hf_endpoint: str | None = None) -> dict[str, Any]:
    """Chart values for the local loop: the fake cloud, and the webhook reached at ``webhook_url``
    (a loopback stand-in for the Service) with a cert valid for 127.0.0.1; ``hf_endpoint``: the
    hub the controller reads uncatalogued models from (hack/fake_hf_hub.py)."""
    return {
        "provisioner": {"cloud": "fake", "fake": {"nodeDelay": f"{fake_node_delay}s"}},
        "controller": {"replicas": controller_replicas,
                       **({"hfEndpoint": hf_endpoint} if hf_endpoint else {})},
        "webhook": {"url": webhook_url, "extraIPs": ["127.0.0.1"]},
    }


# --- pods as processes ----------------------------------------------------------------------------
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@dataclass(frozen=True)
class PodProcess:
    """What a Deployment's container runs: argv and env as the kubelet would start it."""

    argv: list[str]
    env: dict[str, str]
    service_account: str
    secret_mounts: dict[str, str]  # mountPath -> Secret name


def _container_env(container: dict[str, Any], namespace: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        path = (((item.get("valueFrom") or {}).get("fieldRef")) or {}).get("fieldPath")
        if path == "metadata.namespace":
            env[item["name"]] = namespace
        else:
            raise ChartError(f"env {item['name']}: only values and the metadata.namespace fieldRef are "
                             f"supported locally, not {item.get('valueFrom')}")
    return env


def pod_process(deployment: dict[str, Any], container_name: str | None = None) -> PodProcess:
    """Read a stored Deployment into the process its pods would run."""
    namespace = deployment["metadata"]["namespace"]
    spec = deployment["spec"]["template"]["spec"]
    containers = spec["containers"]
    container = next((c for c in containers if c["name"] == container_name), None) if container_name \
        else containers[0]
    if container is None:
        raise ChartError(f"{deployment['metadata']['name']} has no container {container_name!r}")
    env = _container_env(container, namespace)

    def expand(arg: str) -> str:  # the kubelet's $(VAR) expansion; unknown names stay verbatim
        return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), arg)

    argv = [expand(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
    secrets = {v["name"]: v["secret"]["secretName"] for v in spec.get("volumes") or [] if "secret" in v}
    mounts = {m["mountPath"]: secrets[m["name"]] for m in container.get("volumeMounts") or []
              if m["name"] in secrets}
    return PodProcess(argv, env, spec.get("serviceAccountName", "default"), mounts)


def local_argv(proc: PodProcess, overrides: dict[str, str | None]) -> list[str]:
    """``proc.argv`` run by this interpreter, with ``--flag=value`` args replaced by ``overrides``
    (None drops the flag); flags in ``overrides`` that the pod does not pass are appended."""
    script, *args = proc.argv
    module = ENTRY_POINTS.get(Path(script).name)
    if module is None:
        raise ChartError(f"{script!r} is not one of the project's entry points {sorted(ENTRY_POINTS)}")
    out: list[str] = []
    seen: set[str] = set()
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in overrides:
            seen.add(flag)
            if overrides[flag] is not None:
                out.append(f"{flag}={overrides[flag]}")
        else:
            out.append(arg)
    out += [f"{f}={v}" for f, v in overrides.items() if f not in seen and v is not None]
    return [sys.executable, "-m", module, *out]


def write_secret_volume(secret: dict[str, Any], directory: Path) -> Path:
    """Write a Secret's keys as files, as the kubelet mounts a secret volume (keys 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    for key, value in (secret.get("data") or {}).items():
        path = directory / key
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64decode(value))
    return directory


def localize(client: Any, deployment: dict[str, Any], workdir: Path,
             overrides: dict[str, str | None]) -> tuple[list[str], dict[str, str], str]:
    """The argv, env and ServiceAccount name of one local "pod" of ``deployment``.

    Its Secret volumes are written under ``workdir`` (as the kubelet would mount them) and every
    argument that names a path under a mount is pointed at that copy; ``overrides`` then replace
    flags (ports: each local pod needs its own). ``client`` is a controller.runtime client.
    """
    proc = pod_process(deployment)
    namespace = deployment["metadata"]["namespace"]
    argv = local_argv(proc, overrides)
    for mount, secret_name in proc.secret_mounts.items():
        local = write_secret_volume(client.get(SECRETS, secret_name, namespace),
                                    workdir / mount.strip("/").replace("/", "_"))
        argv = [a.replace(mount, str(local)) for a in argv]
    return argv, proc.env, proc.service_account


def start_pod(client: Any, deployment: dict[str, Any], name: str, workdir: Path,
              identities: dict[str, Path], overrides: dict[str, str | None],
              env: dict[str, str] | None = None) -> ManagedProcess:
    """Start one local "pod" of ``deployment`` as its ServiceAccount (``identities``: SA name ->
    kubeconfig), logging to ``workdir/<name>.log``."""
    argv, pod_env, service_account = localize(client, deployment, workdir / name, overrides)
    if service_account not in identities:
        raise ChartError(f"no local identity for ServiceAccount {service_account!r} of {name}")
    argv.append(f"--kubeconfig={identities[service_account]}")
    return ManagedProcess(name, argv, workdir / f"{name}.log", env={**(env or {}), **pod_env},
                          cwd=REPO).start()
