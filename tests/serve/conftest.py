"""Fixtures for tests against a real local Ray + Serve (CPU only).

One Ray instance per test session (starting one costs ~5 s and ~1 GB): 4 logical CPUs
(oversubscribed on purpose, replicas use fractions), a 100 MB object store, token auth off,
and free ports for the dashboard (its REST API deploys serve configs), the metrics export
and Serve's HTTP proxy - several engineers' test runs share this machine, so nothing uses
a fixed port.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hack.ports import free_port

# Must be set before Ray starts: workers inherit the environment.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "0.1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def wait_for(
    check: Callable[[], object], timeout: float = 60, interval: float = 0.2, what: str = "condition"
):
    """Poll ``check`` until it returns something truthy; its last exception is re-raised."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # retry until the deadline
            last = e
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}") from last


@dataclass
class RayServe:
    """The session's Ray + Serve endpoints."""

    http_url: str
    dashboard_url: str
    metrics_url: str


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from hack.tiny_model import ensure_tiny_model

    return ensure_tiny_model()


@pytest.fixture(scope="session")
def ray_serve() -> Iterator[RayServe]:
    import ray
    from ray import serve

    from hack.kuberay_standin.ray_head import haproxy_env, haproxy_wanted
    from rayserve.spec import CLUSTER_ENV

    # the Serve settings every Ray container of a workspace has, so these tests see the request
    # path production has; with RAY_SERVE_ENABLE_HA_PROXY=1 in the environment they run behind
    # HAProxy (the operator's --serve-haproxy), in a directory and on ports of their own
    own = haproxy_env() if haproxy_wanted(os.environ) else {}
    os.environ.update({**CLUSTER_ENV, **own})
    dash, metrics, http = free_port(), free_port(), free_port()
    ray.init(
        num_cpus=4,
        object_store_memory=100 * 2**20,
        include_dashboard=True,
        dashboard_port=dash,
        _metrics_export_port=metrics,
        _system_config={"metrics_report_interval_ms": 1000},
        namespace="kaito-serve-tests",
        log_to_driver=False,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": http}, proxy_location="HeadOnly")
    try:
        yield RayServe(f"http://127.0.0.1:{http}", f"http://127.0.0.1:{dash}", f"http://127.0.0.1:{metrics}")
    finally:
        serve.shutdown()
        ray.shutdown()
        if own:
            shutil.rmtree(own["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"], ignore_errors=True)


def ensure_serve(rs: RayServe) -> None:
    """Serve on the session's HTTP port. A test that tears Serve down (the dashboard's
    ``DELETE /api/serve/applications/`` shuts Serve down) leaves the next ``serve.run`` to start a
    fresh Serve on the default port 8000; this starts it on the session's instead (a no-op while
    the session's Serve is up)."""
    from ray import serve

    port = int(rs.http_url.rsplit(":", 1)[1])
    serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")


def tiny_args(model_path: Path, **overrides) -> dict:
    """``ServeArgs`` for the tiny model, as a dict (what a serve config carries)."""
    args = {
        "model": {"name": "tiny-phi-3", "path": str(model_path), "max_context": 256},
        "parallel": {"workers": 1, "gpus_per_worker": 0, "cpus_per_worker": 0.1},
        "engine": {"max_batch_size": 8, "max_waiting": 16, "max_new_tokens_default": 16},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(args.get(key), dict):
            args[key] = {**args[key], **value}
        else:
            args[key] = value
    return args


QA = [
    ("what is kaito", "kaito is a fast operator"),
    ("hello", "hello world"),
    ("one two", "three four five"),
    ("scale up", "scale down"),
]


def write_dataset(path: Path, pairs: list[tuple[str, str]]) -> Path:
    """An OpenAI chat-format JSONL file of (user, assistant) pairs."""
    import json

    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in pairs
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def adapters(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """Two LoRA adapters trained by rayserve.tuning: 'qa' learns QA, 'rev' the answers reversed."""
    from rayserve.tuning.train import main

    root = tmp_path_factory.mktemp("adapters")
    out = {}
    for name, pairs in {"qa": QA, "rev": [(q, " ".join(reversed(a.split()))) for q, a in QA]}.items():
        data = write_dataset(root / f"{name}.jsonl", pairs)
        main(
            [
                "--model",
                str(tiny_model),
                "--data",
                str(data),
                "--output",
                str(root / name),
                "--max-steps",
                "25",
                "--lr",
                "5e-3",
                "--rank",
                "4",
                "--batch-size",
                "4",
            ]
        )
        out[name] = root / name
    return out
