"""The LLM service of one replica: tokenizer + engine + model routing + request limits.

Why apart from HTTP (the "server" tier between Ray Serve LLM's ingress and engine): the three
API dialects (Kaito ``/chat``, OpenAI chat, OpenAI completions) differ only in how they phrase
a request and shape the answer. Everything they share lives here once: ``prepare`` turns any
request schema into a ``PreparedRequest`` (which model or adapter, the prompt's token ids,
the tokens it may generate in the context window, its ``SamplingParams``), and ``stream`` runs
one on the engine as text chunks with stop strings and usage counts. It works without FastAPI
or Serve (the benchmark and tests use it so).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from rayserve.engine import EngineStats
from rayserve.engine_group import EngineGroup
from rayserve.errors import RequestError, clip
from rayserve.loading import context_limit, eos_token_ids, load_config, load_tokenizer
from rayserve.params import SamplingParams
from rayserve.pipeline import LocalPipeline, Pipeline, RayPipeline
from rayserve.schemas import GenerationRequest, PromptInput
from rayserve.sequence import EngineClient, EngineOverloaded, FinishReason, GenerationFailed, TokenEvent
from rayserve.spec import BASE, ServeArgs
from rayserve.text import IncrementalDecoder, StopMatcher, encode, render_chat

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedRequest:
    """A request as the engine will run it, whatever dialect it came in."""

    prompt_ids: list[int]
    params: SamplingParams
    adapter: str = BASE
    stops: list[str] | None = None
    prompt_text: str = ""  # the text the prompt stands for (token ids decoded), for echo
    model: str = ""  # the served name the request asked for (or the base model's)


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
        self.pipeline = pipeline or build_pipeline(args, config.get_text_config().num_hidden_layers)
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
            f"model '{clip(requested)}' is not served here; available: {self.args.served_names()}",
            kind="model_not_found",
            param="model",
        )

    def prepare(self, req: GenerationRequest) -> PreparedRequest:
        """Route, tokenize and budget ``req``: 404 for a model not served here, 400 for a prompt
        or a token limit that cannot fit the context window."""
        adapter = self.adapter_for(req.model)
        ids, text = self._tokenize(req.prompt_input())
        self._check_room(len(ids))  # a prompt past the window must say so, not blame a limit
        requested, param = req.token_limit(len(ids), self.context)
        max_new = self.budget(len(ids), requested, param)
        params = req.to_sampling_params(max_new, len(ids))
        return PreparedRequest(ids, params, adapter, req.stops(), text, req.model or self.model_name)

    def _tokenize(self, prompt: PromptInput) -> tuple[list[int], str]:
        """The prompt's token ids and the text they stand for."""
        if prompt.messages is not None:
            text = render_chat(self.tokenizer, prompt.messages)
            return encode(self.tokenizer, text, chat=True), text
        if prompt.token_ids is not None:
            ids = prompt.token_ids
            if max(ids) >= len(self.tokenizer) or min(ids) < 0:
                raise RequestError(400, "prompt token ids out of the vocabulary range", param="prompt")
            return ids, self.tokenizer.decode(ids)
        text = prompt.text or ""
        return encode(self.tokenizer, text, chat=False), text

    def _check_room(self, prompt_len: int) -> int:
        room = self.context - prompt_len
        if room <= 0:
            raise RequestError(
                400,
                f"prompt is {prompt_len} tokens; this model's maximum context length is {self.context}",
                param="messages",
            )
        return room

    def budget(self, prompt_len: int, requested: int | None, param: str = "max_tokens") -> int:
        """How many tokens may be generated; 400 when the request cannot fit the context."""
        room = self._check_room(prompt_len)
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
    def stream(self, req: PreparedRequest) -> AsyncIterator[Chunk]:
        """Queue the request now (429 ``RequestError`` at once when the engine is full) and
        return its text deltas; the engine sequence is cancelled when the caller stops
        iterating (client gone) or a stop string appears."""
        if not req.prompt_ids:  # the engine refuses it; say so as a 400, not a 500
            raise RequestError(400, "the prompt is empty: send at least one token of text", param="prompt")
        try:
            seq = self.engine.submit(req.prompt_ids, req.params, req.adapter)
        except EngineOverloaded as e:
            raise RequestError(429, f"server busy: {e}; retry later", kind="rate_limit_error") from e
        return self._text(self.engine.stream(seq), req.stops)

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
            raise RequestError(503, f"{clip(cause, 300)}; retry", kind="server_error") from e
        finally:
            await events.aclose()

    async def complete(self, req: PreparedRequest) -> Completion:
        text, reason, n = await collect(self.stream(req))
        return Completion(text, reason, len(req.prompt_ids), n)

    async def close(self) -> None:
        await self.engine.close()
