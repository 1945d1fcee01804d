"""The optional API key of /chat and /v1 (issue 11, item 8): checked before any work, 401
otherwise, and a key asked for but missing refuses to serve rather than serving openly."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.requests import Request
from test_rayserve_ingress import ARGS, FakeMetrics, FakeService

from rayserve.app import LLMIngress, _request_error
from rayserve.auth import ApiKeyCheck, MissingApiKey
from rayserve.builder import ServeConfigInput
from rayserve.errors import RequestError
from rayserve.spec import ModelSpec

KEYED = {**ARGS, "api_key_env": "KAITO_TEST_API_KEY"}


class CountingService(FakeService):
    prepared = 0
    created, context = 0, 128  # what /v1/models reads

    def prepare(self, req):
        CountingService.prepared += 1
        return super().prepare(req)


def _req(path: str, body: bytes, authorization: str | None = None, method: str = "POST") -> Request:
    async def receive() -> dict:
        raise AssertionError("the body was read before the key was checked")

    headers = [(b"content-length", str(len(body)).encode())]
    if authorization is not None:
        headers.append((b"authorization", authorization.encode()))
    return Request({"type": "http", "method": method, "path": path, "headers": headers}, receive)


@pytest.fixture()
def keyed(monkeypatch: pytest.MonkeyPatch) -> tuple[LLMIngress, FakeMetrics]:
    monkeypatch.setenv("KAITO_TEST_API_KEY", "s3cret")
    metrics = FakeMetrics()
    return LLMIngress(KEYED, service=CountingService(), metrics=metrics), metrics  # type: ignore[arg-type]


@pytest.mark.parametrize("authorization", [None, "", "Bearer wrong", "Basic s3cret", "s3cret", "Bearer"])
def test_requests_without_the_key_get_401_before_any_work(keyed, authorization):
    ingress, metrics = keyed
    before = CountingService.prepared
    for path, route in (("/chat", ingress.chat), ("/v1/completions", ingress.completions),
                        ("/v1/chat/completions", ingress.chat_completions)):
        with pytest.raises(RequestError) as err:
            asyncio.run(route(_req(path, b'{"prompt": "hi"}', authorization)))
        assert err.value.status == 401 and err.value.kind == "authentication_error"
        answer = asyncio.run(_request_error(_req(path, b""), err.value))
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
    with pytest.raises(RequestError):
        asyncio.run(ingress.models(_req("/v1/models", b"", authorization, method="GET")))
    assert CountingService.prepared == before  # nothing was prepared, no body read
    assert [status for *_, status, _ in metrics.requests] == [401, 401, 401]


def test_the_right_key_is_served(keyed):
    ingress, _ = keyed

    async def receive() -> dict:
        return {"type": "http.request", "body": b'{"prompt": "hi "}', "more_body": False}

    req = Request({"type": "http", "method": "POST", "path": "/chat", "headers": [
        (b"content-length", b"16"), (b"authorization", b"Bearer s3cret")]}, receive)
    assert json.loads(asyncio.run(ingress.chat(req)).body) == {"Result": "hi w0 w1 w2 "}
    models = asyncio.run(ingress.models(_req("/v1/models", b"", "bearer s3cret", method="GET")))
    assert models["data"][0]["id"] == "tiny"


def test_a_key_asked_for_but_missing_refuses_to_serve(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("KAITO_TEST_API_KEY", raising=False)
    with pytest.raises(MissingApiKey):
        LLMIngress(KEYED, service=FakeService(), metrics=FakeMetrics())  # type: ignore[arg-type]
    monkeypatch.setenv("KAITO_TEST_API_KEY", "  ")
    with pytest.raises(MissingApiKey):
        ApiKeyCheck.from_env("KAITO_TEST_API_KEY")


def test_no_key_no_check_and_no_field_in_the_serve_config():
    ApiKeyCheck(None).check(None)
    plain = ServeConfigInput(model=ModelSpec(name="m", path="/m")).serve_args()
    assert "api_key_env" not in plain
    keyed = ServeConfigInput(model=ModelSpec(name="m", path="/m"), api_key_env="KAITO_API_KEY").serve_args()
    assert keyed["api_key_env"] == "KAITO_API_KEY"
