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
"""

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from ray import serve

from rayserve.metrics import ServeMetrics
from rayserve.sampling import SamplingParams
from rayserve.schemas import ChatCompletionRequest, CompletionRequest, LegacyChatRequest
from rayserve.service import Chunk, LLMService, RequestError, collect
from rayserve.spec import ServeArgs
from rayserve.text import encode, render_chat

log = logging.getLogger(__name__)

DEPLOYMENT_NAME = "LLMServer"
api = FastAPI(title="kaito-py rayserve", docs_url=None, redoc_url=None)

M = TypeVar("M", bound=BaseModel)


@api.exception_handler(RequestError)
async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    if request.url.path.endswith("/chat"):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)
    body = {"error": {"message": exc.message, "type": exc.kind, "param": exc.param, "code": exc.status}}
    return JSONResponse(body, status_code=exc.status)


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


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def _error_event(e: RequestError) -> str:
    """A failure after a stream began (status 200 already sent), as vLLM reports it: an
    ``error`` event and the end of the stream, so clients raise instead of hanging."""
    body = {"error": {"message": e.message, "type": e.kind, "param": e.param, "code": e.status}}
    return _sse(body) + "data: [DONE]\n\n"


def _response(obj: str, ident: str, created: int, name: str, choice: dict, prompt: int, n: int) -> dict:
    usage = {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}
    return {
        "id": ident,
        "object": obj,
        "created": created,
        "model": name,
        "choices": [choice],
        "usage": usage,
    }


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@serve.deployment(name=DEPLOYMENT_NAME, max_ongoing_requests=64, health_check_period_s=10)
@serve.ingress(api)
class LLMServer:
    """One replica: loads the model (or starts its stage actors) and serves the routes."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = ServeArgs.model_validate(args)
        self.metrics = ServeMetrics(self.args.model.name)
        self.service = LLMService(self.args, stats=self.metrics.engine_stats())
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
    async def models(self) -> dict[str, Any]:
        base = self.service.model_name
        data = [
            {
                "id": base,
                "object": "model",
                "created": self.service.created,
                "owned_by": "kaito",
                "root": self.args.model.path,
                "max_model_len": self.service.context,
            }
        ]
        for a in self.args.adapters:
            data.append(
                {
                    "id": a.name,
                    "object": "model",
                    "created": self.service.created,
                    "owned_by": "kaito",
                    "root": a.path,
                    "parent": base,
                    "max_model_len": self.service.context,
                }
            )
        return {"object": "list", "data": data}

    # --- Kaito legacy ---------------------------------------------------------------------
    @api.post("/chat")
    async def chat(self, request: Request) -> JSONResponse:
        t0 = time.monotonic()
        req = await parse_body(request, LegacyChatRequest, self.max_bytes)
        adapter = self.service.adapter_for(req.model)
        if req.messages:
            text, chat = render_chat(self.service.tokenizer, [(m.role, m.text()) for m in req.messages]), True
        else:
            text, chat = (req.prefix or "") + (req.prompt or ""), False
        ids = encode(self.service.tokenizer, text, chat)
        gk = req.generate_kwargs
        # the context window first: a prompt past it must say so, not blame max_length
        self.service.budget(len(ids), None)
        # HF's max_length (prompt + output) is a ceiling, so past the window it is clamped to it
        max_length = min(gk.max_length, self.service.context)
        wanted = gk.max_new_tokens if gk.max_new_tokens is not None else max_length - len(ids)
        if wanted <= 0:
            raise RequestError(
                400, f"max_length={gk.max_length} leaves no room after the {len(ids)}-token prompt"
            )
        params = SamplingParams(
            max_new_tokens=self.service.budget(len(ids), wanted, "generate_kwargs.max_new_tokens"),
            min_new_tokens=gk.min_new_tokens
            if gk.min_new_tokens is not None
            else max(0, gk.min_length - len(ids)),
            do_sample=gk.do_sample,
            temperature=gk.temperature,
            top_k=gk.top_k,
            top_p=gk.top_p,
            repetition_penalty=gk.repetition_penalty,
            seed=gk.seed,
        )
        out = await self.service.complete(ids, params, adapter)
        result = out.text if (req.messages or not req.return_full_text) else (req.prompt or "") + out.text
        self.metrics.prompt_tokens.inc(len(ids), tags={"model": self.service.model_name})
        self._observe("/chat", req.model, 200, t0)
        return JSONResponse({"Result": result})

    # --- OpenAI ---------------------------------------------------------------------------
    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        t0 = time.monotonic()
        req = await parse_body(request, ChatCompletionRequest, self.max_bytes)
        adapter = self.service.adapter_for(req.model)
        text = render_chat(self.service.tokenizer, [(m.role, m.text()) for m in req.messages])
        ids = encode(self.service.tokenizer, text, chat=True)
        limit = req.max_completion_tokens or req.max_tokens
        params = self._openai_params(req, self.service.budget(len(ids), limit))
        chunks = self.service.stream(ids, params, adapter, req.stop)
        ident, created, name = (
            f"chatcmpl-{uuid.uuid4().hex}",
            int(time.time()),
            req.model or self.service.model_name,
        )
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            events = self._chat_events(chunks, ident, created, name, len(ids), include_usage, t0)
            return StreamingResponse(events, media_type="text/event-stream")
        text, reason, n = await collect(chunks)
        self._observe("/v1/chat/completions", req.model, 200, t0, len(ids))
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}
        return _response("chat.completion", ident, created, name, choice, len(ids), n)

    @api.post("/v1/completions")
    async def completions(self, request: Request):
        t0 = time.monotonic()
        req = await parse_body(request, CompletionRequest, self.max_bytes)
        adapter = self.service.adapter_for(req.model)
        if isinstance(req.prompt, str):
            prompt_text, ids = req.prompt, encode(self.service.tokenizer, req.prompt, chat=False)
        else:
            ids = list(req.prompt)
            if max(ids) >= len(self.service.tokenizer) or min(ids) < 0:
                raise RequestError(400, "prompt token ids out of the vocabulary range", param="prompt")
            prompt_text = self.service.tokenizer.decode(ids)
        params = self._openai_params(req, self.service.budget(len(ids), req.max_tokens))
        chunks = self.service.stream(ids, params, adapter, req.stop)
        ident, created, name = (
            f"cmpl-{uuid.uuid4().hex}",
            int(time.time()),
            req.model or self.service.model_name,
        )
        prefix = prompt_text if req.echo else ""
        if req.stream:
            events = self._completion_events(chunks, ident, created, name, prefix, len(ids), t0)
            return StreamingResponse(events, media_type="text/event-stream")
        text, reason, n = await collect(chunks)
        self._observe("/v1/completions", req.model, 200, t0, len(ids))
        choice = {"index": 0, "text": prefix + text, "finish_reason": reason, "logprobs": None}
        return _response("text_completion", ident, created, name, choice, len(ids), n)

    # --- helpers --------------------------------------------------------------------------
    @staticmethod
    def _openai_params(req: ChatCompletionRequest | CompletionRequest, max_new: int) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=max_new,
            min_new_tokens=min(req.min_tokens, max_new),
            do_sample=req.temperature > 0,
            temperature=req.temperature,
            top_p=req.top_p,
            top_k=req.top_k,
            repetition_penalty=req.repetition_penalty,
            seed=req.seed,
            ignore_eos=req.ignore_eos,
        )

    def _observe(self, route: str, model: str | None, status: int, t0: float, prompt_tokens: int = 0) -> None:
        name = model or self.service.model_name
        self.metrics.request(route, name, status, time.monotonic() - t0)
        if prompt_tokens:
            self.metrics.prompt_tokens.inc(prompt_tokens, tags={"model": self.service.model_name})

    async def _chat_events(
        self,
        chunks: AsyncIterator[Chunk],
        ident: str,
        created: int,
        name: str,
        prompt_len: int,
        include_usage: bool,
        t0: float,
    ) -> AsyncIterator[str]:
        base = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": name}
        yield _sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
        n = 0
        try:
            async for c in chunks:
                n = c.completion_tokens
                delta = {"content": c.text} if c.text else {}
                if delta or c.finish_reason:
                    yield _sse(
                        {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": c.finish_reason}]}
                    )
        except RequestError as e:  # headers are gone: the error travels as an event
            yield _error_event(e)
            return
        if include_usage:
            yield _sse({**base, "choices": [], "usage": _usage(prompt_len, n)})
        yield "data: [DONE]\n\n"
        self._observe("/v1/chat/completions", name, 200, t0, prompt_len)

    async def _completion_events(
        self,
        chunks: AsyncIterator[Chunk],
        ident: str,
        created: int,
        name: str,
        prefix: str,
        prompt_len: int,
        t0: float,
    ) -> AsyncIterator[str]:
        base = {"id": ident, "object": "text_completion", "created": created, "model": name}
        if prefix:
            yield _sse(
                {**base, "choices": [{"index": 0, "text": prefix, "finish_reason": None, "logprobs": None}]}
            )
        try:
            async for c in chunks:
                if c.text or c.finish_reason:
                    choice = {"index": 0, "text": c.text, "finish_reason": c.finish_reason, "logprobs": None}
                    yield _sse({**base, "choices": [choice]})
        except RequestError as e:
            yield _error_event(e)
            return
        yield "data: [DONE]\n\n"
        self._observe("/v1/completions", name, 200, t0, prompt_len)


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
