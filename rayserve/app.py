"""The Ray Serve application: a FastAPI ingress over one ``LLMService`` per replica.

Routes: ``POST /chat`` (Kaito legacy), ``POST /v1/chat/completions`` and ``/v1/completions``
(OpenAI, ``stream: true`` as server-sent events), ``GET /v1/models``, ``GET /health``.

Deploy with a serve config whose application has ``import_path: rayserve.app:build_app``
and ``args`` = a ``rayserve.spec.ServeArgs`` (``rayserve.builder`` writes such configs), or
in Python: ``serve.run(build_app({...}))``.

Error policy: a body we cannot use is a 400 with a message (413 when too large), an unknown
model a 404, a request that cannot fit the context window a 400 (the legacy ``max_length``,
a ceiling on prompt + output, is clamped to the window instead), a full engine a 429 (and
Serve itself answers 503 past ``max_queued_requests``), a model that fails under a request
(a dead pipeline stage) a 503 - as an ``error`` event when the stream had already begun.
Legacy ``/chat`` errors use FastAPI's ``{"detail": ...}`` shape, ``/v1`` errors OpenAI's
``{"error": {...}}``.

The tiers, as in Ray Serve LLM: this ingress parses a body into its schema and formats the
answer (``rayserve.responses``); ``LLMService`` prepares and runs the request; the engine
schedules tokens. Every request's status - errors, streams that fail midway (recorded with
the error's status) and clients that leave (499) included - is recorded in one place.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from ray import serve

from rayserve.auth import ApiKeyCheck
from rayserve.errors import RequestError
from rayserve.metrics import ServeMetrics
from rayserve.responses import (
    chat_choice,
    chat_events,
    completion_body,
    completion_choice,
    completion_events,
    error_body,
    error_event,
)
from rayserve.schemas import ChatCompletionRequest, CompletionRequest, LegacyChatRequest
from rayserve.service import LLMService, PreparedRequest, collect, merge
from rayserve.spec import REPLICA_ENV, ServeArgs

log = logging.getLogger(__name__)

DEPLOYMENT_NAME = "LLMServer"
CLIENT_CLOSED = 499  # nginx's status for a client that left before the answer was complete
api = FastAPI(title="kaito-py rayserve", docs_url=None, redoc_url=None)

M = TypeVar("M", bound=BaseModel)
# what a route's answer is: a JSON body, or server-sent events to stream
Answer = dict[str, Any] | AsyncIterator[str]


@api.exception_handler(RequestError)
async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if request.url.path.endswith("/chat"):
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=headers)
    return JSONResponse(error_body(exc), status_code=exc.status, headers=headers)


async def parse_body(request: Request, model: type[M], max_bytes: int) -> M:
    """Read at most ``max_bytes`` and validate; every failure is a ``RequestError``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise RequestError(413, f"request body is {declared} bytes; the limit is {max_bytes}")
    raw = b""
    async for part in request.stream():
        raw += part
        if len(raw) > max_bytes:
            raise RequestError(413, f"request body exceeds the limit of {max_bytes} bytes")
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as e:
        raise RequestError(400, _describe(e)) from None


def _describe(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:5]:
        where = ".".join(str(x) for x in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "invalid request body: " + "; ".join(parts)


@dataclass
class _Exchange:
    """One request's bookkeeping until its status is known."""

    route: str
    model: str
    start: float
    prompt_tokens: int = 0


class LLMIngress:
    """One replica's HTTP face: parses each dialect's body, lets the ``LLMService`` prepare and
    run it, formats the answer, and records every request's status in one place
    (``_exchange``), errors included. ``LLMServer`` is this class as a Serve deployment."""

    def __init__(
        self,
        args: dict[str, Any],
        service: LLMService | None = None,
        metrics: ServeMetrics | None = None,
    ) -> None:
        """``service`` and ``metrics`` are for tests; Serve passes ``args`` only."""
        self.args = ServeArgs.model_validate(args)
        self.auth = ApiKeyCheck.from_env(self.args.api_key_env)  # before any model is loaded
        self.metrics = metrics or ServeMetrics(self.args.model.name)
        self.service = service or LLMService(self.args, stats=self.metrics.engine_stats())
        self.max_bytes = self.args.engine.max_body_bytes

    # --- health and discovery ------------------------------------------------------------
    @api.get("/health")
    async def health(self) -> dict[str, Any]:
        engine = self.service.engine
        return {
            "status": "Healthy",
            "model": self.service.model_name,
            "running": len(engine.running),
            "waiting": engine.queue_depth,
            "steps": engine.steps,
        }

    async def check_health(self) -> None:
        """Serve's replica health check: a dead stage actor makes the replica unhealthy."""
        info = getattr(self.service.pipeline, "info", None)
        if info is not None:
            await info()

    @api.get("/v1/models")
    async def models(self, request: Request) -> dict[str, Any]:
        self.auth.check(request.headers.get("authorization"))
        base = self.service.model_name
        card = {"object": "model", "created": self.service.created, "owned_by": "kaito"}
        data = [{"id": base, **card, "root": self.args.model.path, "max_model_len": self.service.context}]
        for a in self.args.adapters:
            data.append(
                {"id": a.name, **card, "root": a.path, "parent": base, "max_model_len": self.service.context}
            )
        return {"object": "list", "data": data}

    # --- the routes: parse, then format ---------------------------------------------------
    @api.post("/chat")
    async def chat(self, request: Request) -> Response:
        """Kaito's legacy route."""
        return await self._exchange("/chat", request, LegacyChatRequest, self._legacy)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        return await self._exchange("/v1/chat/completions", request, ChatCompletionRequest, self._chat)

    @api.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        return await self._exchange("/v1/completions", request, CompletionRequest, self._completion)

    async def _legacy(self, req: LegacyChatRequest, p: PreparedRequest) -> Answer:
        out = await self.service.complete(p)
        result = out.text if (req.messages or not req.return_full_text) else (req.prompt or "") + out.text
        return {"Result": result}

    async def _chat(self, req: ChatCompletionRequest, p: PreparedRequest) -> Answer:
        streams = self.service.streams(p, req.n)
        ident, created, logprobs = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), bool(req.logprobs)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return chat_events(
                merge(streams), ident, created, p.model, len(p.prompt_ids), include_usage, req.n, logprobs
            )
        outs = await asyncio.gather(*(collect(s) for s in streams))
        choices = [chat_choice(i, c, logprobs) for i, c in enumerate(outs)]
        n = sum(c.completion_tokens for c in outs)
        return completion_body("chat.completion", ident, created, p.model, choices, len(p.prompt_ids), n)

    async def _completion(self, req: CompletionRequest, p: PreparedRequest) -> Answer:
        streams = self.service.streams(p, req.n)
        ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        prefix, logprobs = (p.prompt_text if req.echo else ""), req.logprobs is not None
        if req.stream:
            return completion_events(merge(streams), ident, created, p.model, prefix, req.n, logprobs)
        outs = await asyncio.gather(*(collect(s) for s in streams))
        choices = [completion_choice(i, c, prefix, logprobs) for i, c in enumerate(outs)]
        n = sum(c.completion_tokens for c in outs)
        return completion_body("text_completion", ident, created, p.model, choices, len(p.prompt_ids), n)

    # --- one place for every request's outcome ---------------------------------------------
    async def _exchange(
        self,
        route: str,
        request: Request,
        schema: type[M],
        answer: Callable[[M, PreparedRequest], Awaitable[Answer]],
    ) -> Response:
        """Parse, prepare and answer one request, and record its status exactly once: the
        error's status when it fails (the exception handler then writes the body), 200 for a
        whole answer, and for a stream whatever its end turns out to be (``_recorded``)."""
        ex = _Exchange(route, self.service.model_name, time.monotonic())
        try:
            self.auth.check(request.headers.get("authorization"))  # before any work
            req = await parse_body(request, schema, self.max_bytes)
            prepared = await self.service.prepare(req)
            ex.model, ex.prompt_tokens = prepared.model, len(prepared.prompt_ids)
            out = await answer(req, prepared)
        except RequestError as e:
            self._record(ex, e.status)
            raise
        except asyncio.CancelledError:
            self._record(ex, CLIENT_CLOSED)
            raise
        except Exception:
            self._record(ex, 500)
            raise
        if isinstance(out, dict):
            self._record(ex, 200)
            return JSONResponse(out)
        return StreamingResponse(self._recorded(out, ex), media_type="text/event-stream")

    async def _recorded(self, events: AsyncIterator[str], ex: _Exchange) -> AsyncIterator[str]:
        """``events``, then the stream's status: 200 at its end, the error's status when it
        failed after the headers were sent (the error travels as an event), 499 when the
        client left first."""
        status = CLIENT_CLOSED
        try:
            async with aclosing(events):
                async for event in events:
                    yield event
            status = 200
        except RequestError as e:
            status = e.status
            yield error_event(e)
        except Exception:
            status = 500
            raise
        finally:
            self._record(ex, status)

    def _record(self, ex: _Exchange, status: int) -> None:
        """Prompt tokens count for answered requests only, as before errors were recorded."""
        seconds = time.monotonic() - ex.start
        self.metrics.request(ex.route, ex.model, status, seconds, ex.prompt_tokens if status == 200 else 0)


LLMServer = serve.deployment(
    name=DEPLOYMENT_NAME,
    max_ongoing_requests=64,
    health_check_period_s=10,
    ray_actor_options={"runtime_env": {"env_vars": REPLICA_ENV}},
)(serve.ingress(api)(LLMIngress))


def build_app(args: dict[str, Any]) -> serve.Application:
    """Serve's application builder (``import_path: rayserve.app:build_app``).

    ``args`` is a ``ServeArgs``; it is validated here so a bad config fails the deploy with
    a readable message instead of crashing replicas. The deployment's default
    ``max_ongoing_requests`` admits the engine's batch plus its wait queue, so the engine -
    not Serve's router - decides when to answer 429.
    """
    parsed = ServeArgs.model_validate(args)
    eng = parsed.engine
    return LLMServer.options(max_ongoing_requests=eng.max_batch_size + eng.max_waiting + 1).bind(
        parsed.model_dump(mode="json")
    )
