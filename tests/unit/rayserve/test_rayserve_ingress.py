"""The ingress records every request's real status in one place - errors, streams that fail
midway and clients that leave included - over a fake service (no model, no Ray)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from starlette.requests import Request

from rayserve.app import CLIENT_CLOSED, LLMIngress
from rayserve.errors import RequestError
from rayserve.params import SamplingParams
from rayserve.schemas import CompletionRequest, LegacyChatRequest
from rayserve.sequence import FinishReason
from rayserve.service import Chunk, Completion, PreparedRequest

ARGS = {"model": {"name": "tiny", "path": "/nowhere"}, "engine": {"max_body_bytes": 1024}}


class FakeMetrics:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, int, int]] = []

    def request(self, route: str, model: str, status: int, seconds: float, prompt_tokens: int = 0) -> None:
        assert seconds >= 0
        self.requests.append((route, model, status, prompt_tokens))


class FakeService:
    """Prepares like the real one in miniature; ``fail_after`` chunks, a 503 mid-stream."""

    model_name = "tiny"

    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after = fail_after

    async def prepare(self, req: LegacyChatRequest | CompletionRequest) -> PreparedRequest:
        if req.model not in (None, "tiny"):
            raise RequestError(404, f"model '{req.model}' is not served here", kind="model_not_found")
        return PreparedRequest([1, 2, 3], SamplingParams(max_new_tokens=4), model=req.model or "tiny")

    async def stream(self, p: PreparedRequest) -> AsyncIterator[Chunk]:
        for i in range(3):
            if i == self.fail_after:
                raise RequestError(503, "stage died; retry", kind="server_error")
            yield Chunk(f"w{i} ", None, i + 1)
        yield Chunk("", FinishReason.LENGTH, 4)

    def streams(self, p: PreparedRequest, n: int) -> list[AsyncIterator[Chunk]]:
        return [self.stream(p) for _ in range(n)]

    async def complete(self, p: PreparedRequest) -> Completion:
        parts = [c.text async for c in self.stream(p)]
        return Completion("".join(parts), FinishReason.LENGTH, 3, 4)


def _ingress(service: FakeService | None = None) -> tuple[LLMIngress, FakeMetrics]:
    metrics = FakeMetrics()
    return LLMIngress(ARGS, service=service or FakeService(), metrics=metrics), metrics  # type: ignore[arg-type]


def _request(path: str, body: bytes) -> Request:
    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    headers = [(b"content-length", str(len(body)).encode())]
    return Request({"type": "http", "method": "POST", "path": path, "headers": headers}, receive)


async def _events(response) -> list[str]:
    return [e async for e in response.body_iterator]


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/completions", b"{not json", 400),
        ("/v1/completions", b'{"prompt": "' + b"a" * 2048 + b'"}', 413),
        ("/v1/completions", b'{"prompt": "x", "model": "gpt-9"}', 404),
        ("/chat", b"{}", 400),
    ],
    ids=["bad-json", "too-large", "unknown-model", "legacy-missing-prompt"],
)
def test_an_error_is_recorded_with_its_real_status(path, body, status):
    ingress, metrics = _ingress()
    route = {"/chat": ingress.chat, "/v1/completions": ingress.completions}[path]
    with pytest.raises(RequestError) as err:
        asyncio.run(route(_request(path, body)))
    assert err.value.status == status
    # an unknown model is not a label: the base model's name stands in
    assert metrics.requests == [(path, "tiny", status, 0)]


def test_answers_are_recorded_as_200_with_their_prompt_tokens():
    ingress, metrics = _ingress()
    legacy = asyncio.run(ingress.chat(_request("/chat", b'{"prompt": "hi "}')))
    assert json.loads(legacy.body) == {"Result": "hi w0 w1 w2 "}
    whole = asyncio.run(ingress.completions(_request("/v1/completions", b'{"prompt": "x", "model": "tiny"}')))
    assert json.loads(whole.body)["choices"][0]["finish_reason"] == "length"
    assert metrics.requests == [("/chat", "tiny", 200, 3), ("/v1/completions", "tiny", 200, 3)]


@pytest.mark.parametrize(("fail_after", "status"), [(None, 200), (1, 503)], ids=["whole", "fails-midway"])
def test_a_stream_is_recorded_when_it_ends_with_how_it_ended(fail_after, status):
    ingress, metrics = _ingress(FakeService(fail_after=fail_after))

    async def main() -> list[str]:
        response = await ingress.completions(_request("/v1/completions", b'{"prompt": "x", "stream": true}'))
        assert metrics.requests == []  # nothing known yet: the stream has not run
        return await _events(response)

    events = asyncio.run(main())
    assert events[-1].endswith("data: [DONE]\n\n")
    if status == 503:
        assert '"code":503' in events[-1] and len(events) == 2  # one chunk, then the error event
    assert metrics.requests == [("/v1/completions", "tiny", status, 3 if status == 200 else 0)]


def test_a_client_that_leaves_a_stream_is_recorded_as_499():
    ingress, metrics = _ingress()

    async def main() -> None:
        response = await ingress.completions(_request("/v1/completions", b'{"prompt": "x", "stream": true}'))
        events = response.body_iterator
        await events.__anext__()
        await events.aclose()  # what Starlette does when the client hangs up

    asyncio.run(main())
    assert metrics.requests == [("/v1/completions", "tiny", CLIENT_CLOSED, 0)]

