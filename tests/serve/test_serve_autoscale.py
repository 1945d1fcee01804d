"""Serve autoscaling on local Ray: load adds a replica, quiet removes it (short delays)."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.serve.conftest import tiny_args, wait_for

pytestmark = [
    pytest.mark.serve,
    # Ray 2.60 compares look_back_period_s with the deprecated metrics_interval_s (default 10 s):
    # a 1 s look-back warns, and setting metrics_interval_s instead warns that it is deprecated.
    # A short look-back is what makes this test fast; the push intervals come from Ray's defaults.
    pytest.mark.filterwarnings("ignore:`look_back_period_s`:FutureWarning"),
]

AUTOSCALING = {
    "min_replicas": 1,
    "initial_replicas": 1,
    "max_replicas": 2,
    "target_ongoing_requests": 1,
    "upscale_delay_s": 0.5,
    "downscale_delay_s": 2,
    "look_back_period_s": 1,
}


def _running_replicas(app: str) -> int:
    from ray import serve

    dep = serve.status().applications[app].deployments["LLMServer"]
    return dep.replica_states.get("RUNNING", 0)


def test_replicas_follow_load(ray_serve, tiny_model):
    from ray import serve

    from rayserve.app import LLMServer

    app = LLMServer.options(
        ray_actor_options={"num_cpus": 0.1}, autoscaling_config=AUTOSCALING, max_ongoing_requests=8
    ).bind(tiny_args(tiny_model))
    serve.run(app, name="tiny-scale", route_prefix="/scale")
    url = f"{ray_serve.http_url}/scale/v1/completions"
    stop = threading.Event()

    def client() -> None:
        body = {"prompt": "one two", "max_tokens": 48, "temperature": 0, "ignore_eos": True}
        with httpx.Client(timeout=60) as c:
            while not stop.is_set():
                c.post(url, json=body)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    try:
        assert _running_replicas("tiny-scale") == 1
        for t in threads:
            t.start()
        wait_for(lambda: _running_replicas("tiny-scale") == 2, timeout=90, interval=0.5, what="scale up to 2")
        stop.set()
        for t in threads:
            t.join(timeout=60)
        wait_for(
            lambda: _running_replicas("tiny-scale") == 1, timeout=90, interval=0.5, what="scale down to 1"
        )
    finally:
        stop.set()
        serve.delete("tiny-scale")
