"""Overload answers fast with 429 (engine queue full) or 503 (Serve's queue full), never hangs."""

from __future__ import annotations

import concurrent.futures as cf
import time

import httpx
import pytest

from tests.serve.conftest import tiny_args

pytestmark = pytest.mark.serve


def test_flood_gets_429_and_503_not_a_hang(ray_serve, tiny_model):
    from ray import serve

    from rayserve.app import LLMServer

    args = tiny_args(tiny_model, engine={"max_batch_size": 1, "max_waiting": 1})
    app = LLMServer.options(
        ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=3, max_queued_requests=2
    ).bind(args)
    serve.run(app, name="tiny-busy", route_prefix="/busy")
    url = f"{ray_serve.http_url}/busy/v1/completions"
    body = {"prompt": "one", "max_tokens": 120, "temperature": 0, "ignore_eos": True}
    try:
        t0 = time.monotonic()
        with cf.ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(lambda _: httpx.post(url, json=body, timeout=120), range(16)))
        elapsed = time.monotonic() - t0
    finally:
        serve.delete("tiny-busy")
    codes = sorted(r.status_code for r in responses)
    assert set(codes) <= {200, 429, 503}, codes
    assert codes.count(200) >= 1 and {429, 503} <= set(codes), codes
    busy = next(r for r in responses if r.status_code == 429)
    assert "busy" in busy.json()["error"]["message"]
    assert elapsed < 90
