"""The LLM service of one replica: tokenizer + engine + model routing + request limits.

Why apart from HTTP: the three API dialects (Kaito ``/chat``, OpenAI chat, OpenAI
completions) differ only in how they phrase a request and shape the answer. Everything
they share - which model or adapter serves a request, how many tokens it may generate in
the context window, streaming text with stop strings, usage counts - lives here once, and
can be used without FastAPI or Serve (the benchmark and tests do).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from rayserve.adapters import BASE
from rayserve.engine import EngineStats
from rayserve.engine_group import EngineGroup
from rayserve.loading import context_limit, eos_token_ids, load_config, load_tokenizer
from rayserve.pipeline import LocalPipeline, Pipeline, RayPipeline
from rayserve.sampling import SamplingParams
from rayserve.sequence import EngineClient, EngineOverloaded, FinishReason, GenerationFailed, TokenEvent
from rayserve.spec import ServeArgs
from rayserve.text import IncrementalDecoder, StopMatcher

log = logging.getLogger(__name__)


class RequestError(Exception):
    """A problem the caller can fix (or retry): becomes an HTTP 4xx with this message."""

    def __init__(
        self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param


def _clip(text: str, limit: int = 100) -> str:
    """A caller's string as quoted back in an error: a 1 MB name must not make a 1 MB answer."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


@dataclass
class Chunk:
    """A piece of streamed output; the last one has ``finish_reason``."""

    text: str
    finish_reason: FinishReason | None = None
    completion_tokens: int = 0


@dataclass
class Completion:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


async def collect(chunks: AsyncIterator[Chunk]) -> tuple[str, FinishReason, int]:
    """Join a stream into (text, finish_reason, completion_tokens)."""
    parts, reason, n = [], FinishReason.LENGTH, 0
    async for c in chunks:
        parts.append(c.text)
        n = c.completion_tokens
        reason = c.finish_reason or reason
    return "".join(parts), reason, n


def build_pipeline(args: ServeArgs, num_layers: int) -> Pipeline:
    """In-process for one worker; Ray actors in the replica's placement group for more."""
    if args.parallel.workers == 1:
        return LocalPipeline.load(args.model, args.adapters, stages=1, gpus=args.parallel.gpus_per_worker)
    return RayPipeline.start(args.model, args.adapters, args.parallel, num_layers)


class LLMService:
    """See module docstring."""

    def __init__(self, args: ServeArgs, stats: EngineStats | None = None, pipeline: Pipeline | None = None):
        self.args = args
        self.tokenizer = load_tokenizer(args.model)
        config, gen = load_config(args.model)
        self.context = context_limit(args.model, config)
        self.pipeline = pipeline or build_pipeline(args, config.num_hidden_layers)
        self.engine: EngineClient = EngineGroup(
            self.pipeline,
            eos_token_ids(config, gen, self.tokenizer),
            batches=args.engine.microbatches or args.parallel.workers,
            max_batch_size=args.engine.max_batch_size,
            max_waiting=args.engine.max_waiting,
            has_adapters=bool(args.adapters),
            stats=stats,
            kv_budget_tokens=args.engine.kv_budget_tokens,
        )
        self.created = int(time.time())

    # --- routing and limits ---------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.args.model.name

    def adapter_for(self, requested: str | None) -> str:
        """``None`` or the base name -> base model; an adapter name -> that adapter; else 404."""
        if requested is None or requested == self.model_name:
            return BASE
        if any(a.name == requested for a in self.args.adapters):
            return requested
        raise RequestError(
            404,
            f"model '{_clip(requested)}' is not served here; available: {self.args.served_names()}",
            kind="model_not_found",
            param="model",
        )

    def budget(self, prompt_len: int, requested: int | None, param: str = "max_tokens") -> int:
        """How many tokens may be generated; 400 when the request cannot fit the context."""
        room = self.context - prompt_len
        if room <= 0:
            raise RequestError(
                400,
                f"prompt is {prompt_len} tokens; this model's maximum context length is {self.context}",
                param="messages",
            )
        if requested is None:
            return min(room, self.args.engine.max_new_tokens_default)
        if requested > room:
            raise RequestError(
                400,
                f"{param}={requested} plus the {prompt_len}-token prompt exceeds this model's maximum "
                f"context length of {self.context}",
                param=param,
            )
        return requested

    # --- generation -----------------------------------------------------------------------
    def stream(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        adapter: str = BASE,
        stops: list[str] | None = None,
    ) -> AsyncIterator[Chunk]:
        """Queue the request now (429 ``RequestError`` at once when the engine is full) and
        return its text deltas; the engine sequence is cancelled when the caller stops
        iterating (client gone) or a stop string appears."""
        if not prompt_ids:  # the engine refuses it; say so as a 400, not a 500
            raise RequestError(400, "the prompt is empty: send at least one token of text", param="prompt")
        try:
            seq = self.engine.submit(prompt_ids, params, adapter)
        except EngineOverloaded as e:
            raise RequestError(429, f"server busy: {e}; retry later", kind="rate_limit_error") from e
        return self._text(self.engine.stream(seq), stops)

    async def _text(self, events: AsyncIterator[TokenEvent], stops: list[str] | None) -> AsyncIterator[Chunk]:
        decoder, matcher, count = IncrementalDecoder(self.tokenizer), StopMatcher(stops), 0
        try:
            async for ev in events:
                count += 1  # every generated token counts, the stop token too
                text = ""
                if ev.finish_reason is not FinishReason.STOP:  # a stop token is not text
                    text = matcher.feed(decoder.push(ev.token_id))
                    if matcher.stopped:
                        yield Chunk(text, FinishReason.STOP, count)
                        return
                    if ev.finish_reason is None:
                        if text:
                            yield Chunk(text, None, count)
                        continue
                tail = text + matcher.feed(decoder.flush()) + matcher.flush()
                yield Chunk(tail, ev.finish_reason, count)
                return
        except GenerationFailed as e:  # the replica's model failed under it: 503, say why
            cause = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise RequestError(503, f"{_clip(cause, 300)}; retry", kind="server_error") from e
        finally:
            await events.aclose()

    async def complete(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        adapter: str = BASE,
        stops: list[str] | None = None,
    ) -> Completion:
        text, reason, n = await collect(self.stream(prompt_ids, params, adapter, stops))
        return Completion(text, reason, len(prompt_ids), n)

    async def close(self) -> None:
        await self.engine.close()
