"""Overload answers fast with 429 (engine queue full) or 503 (Serve's queue full), never hangs.

Each layer gets its own deployment so that only one of them can be the bottleneck: with both
limits tight in one deployment, which layer rejects first depends on how fast Serve's router
hands requests to the replica, and on a slow CI machine that made the 429 case vanish.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serve.conftest import tiny_args

pytestmark = pytest.mark.serve

FLOOD = 16
BODY = {"prompt": "one", "max_tokens": 200, "temperature": 0, "ignore_eos": True}


def _flood(
    http_url: str, model: Path, name: str, engine: dict[str, int], **options: Any
) -> list[httpx.Response]:
    """Deploy one replica with these limits, fire ``FLOOD`` requests at once, return the answers."""
    from ray import serve

    from rayserve.app import LLMServer

    app = LLMServer.options(ray_actor_options={"num_cpus": 0.1}, **options).bind(
        tiny_args(model, engine=engine)
    )
    serve.run(app, name=name, route_prefix=f"/{name}")
    url = f"{http_url}/{name}/v1/completions"
    try:
        t0 = time.monotonic()
        with cf.ThreadPoolExecutor(FLOOD) as pool:
            responses = list(pool.map(lambda _: httpx.post(url, json=BODY, timeout=120), range(FLOOD)))
        assert time.monotonic() - t0 < 90, "overload must be answered, not queued for ever"
        return responses
    finally:
        serve.delete(name)


def test_full_engine_answers_429(ray_serve, tiny_model):
    # Serve lets every request through to the replica; the engine holds one running + one waiting
    responses = _flood(ray_serve.http_url, tiny_model, "busy-engine", {"max_batch_size": 1, "max_waiting": 1},
                       max_ongoing_requests=FLOOD)
    codes = sorted(r.status_code for r in responses)
    assert set(codes) == {200, 429}, codes
    assert codes.count(200) >= 2, codes
    busy = next(r for r in responses if r.status_code == 429)
    assert busy.json()["error"]["type"] == "rate_limit_error"
    assert "busy" in busy.json()["error"]["message"]


def test_full_serve_queue_answers_503(ray_serve, tiny_model):
    # the engine could take everything; Serve admits one in flight + one queued and sheds the rest
    responses = _flood(ray_serve.http_url, tiny_model, "busy-queue", {"max_batch_size": 8, "max_waiting": 64},
                       max_ongoing_requests=1, max_queued_requests=1)
    codes = sorted(r.status_code for r in responses)
    assert set(codes) == {200, 503}, codes
    assert codes.count(200) >= 1, codes
