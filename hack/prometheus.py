"""Run a real Prometheus server (Debian's package) that scrapes the operator and Ray.

Why: readiness metrics are only worth something if a real Prometheus can scrape and query them.
The config is generated per run: static targets for our processes' ``/metrics`` and Ray's own
service-discovery file for the Serve metrics (``ray_serve_*``), a short scrape interval so the
demo and the e2e test see series within seconds.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from hack.procs import ManagedProcess


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        raise RuntimeError(
            "the 'prometheus' server is not installed: run `apt-get install -y prometheus` "
            "(hack/demo.sh and hack/test.sh do this for you)"
        )
    return path


def write_config(path: Path, targets: dict[str, str], ray_sd_file: Path | None = None) -> Path:
    """Write a scrape config: one job per ``name -> host:port`` target, plus Ray's SD file."""
    scrape_configs: list[dict] = [
        {"job_name": name, "static_configs": [{"targets": [target]}]} for name, target in targets.items()
    ]
    if ray_sd_file is not None:
        scrape_configs.append({"job_name": "ray", "file_sd_configs": [{"files": [str(ray_sd_file)]}]})
    cfg = {"global": {"scrape_interval": "2s", "evaluation_interval": "2s"}, "scrape_configs": scrape_configs}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def start(
    workdir: Path, port: int, targets: dict[str, str], ray_sd_file: Path | None = None
) -> ManagedProcess:
    cfg = write_config(workdir / "prometheus.yaml", targets, ray_sd_file)
    proc = ManagedProcess(
        "prometheus",
        [
            prometheus_binary(),
            f"--config.file={cfg}",
            f"--storage.tsdb.path={workdir / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        workdir / "prometheus.log",
    ).start()
    proc.wait_http(f"http://127.0.0.1:{port}/-/ready", timeout=60)
    return proc


def query(port: int, promql: str) -> list[dict]:
    """Instant query through the HTTP API; returns the result vector."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.load(resp)
    if body.get("status") != "success":
        raise RuntimeError(f"prometheus query {promql!r} failed: {body}")
    return body["data"]["result"]
