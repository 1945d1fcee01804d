"""The API key on a real Serve deployment of the tiny model (issue 11, item 8): /chat and /v1
answer 401 without 'Authorization: Bearer <key>', the health route stays open for probes."""

from __future__ import annotations

import httpx
import pytest

from tests.serve.conftest import tiny_args

pytestmark = pytest.mark.serve

APP, PREFIX, KEY = "tiny-auth", "/auth", "s3cret-key"


@pytest.fixture(scope="module")
def url(ray_serve, tiny_model):
    from ray import serve

    from rayserve.app import LLMServer

    # the Ray pods get the key from the Workspace's Secret as an env var; here, the runtime env
    options = {"num_cpus": 0.1, "runtime_env": {"env_vars": {"KAITO_API_KEY": KEY}}}
    args = tiny_args(tiny_model, api_key_env="KAITO_API_KEY")
    app = LLMServer.options(ray_actor_options=options).bind(args)
    serve.run(app, name=APP, route_prefix=PREFIX)
    yield ray_serve.http_url + PREFIX
    serve.delete(APP)


def test_the_endpoints_need_the_key_and_health_does_not(url):
    with httpx.Client(base_url=url, timeout=60) as http:
        assert http.get("/health").status_code == 200
        for method, path, body in (("GET", "/v1/models", None), ("POST", "/chat", {"prompt": "hi"}),
                                   ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 2})):
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                r = http.request(method, path, json=body, headers=headers)
                assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (path, r.text)
            ok = http.request(method, path, json=body, headers={"Authorization": f"Bearer {KEY}"})
            assert ok.status_code == 200, (path, ok.text)
