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

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import lru_cache

from jinja2 import TemplateError

from rayserve.engine import EngineStats
from rayserve.engine_group import EngineGroup
from rayserve.errors import RequestError, clip
from rayserve.loading import context_limit, eos_token_ids, load_config, load_tokenizer
from rayserve.params import SamplingParams
from rayserve.pipeline import LocalPipeline, Pipeline, RayPipeline
from rayserve.schemas import GenerationRequest, PromptInput
from rayserve.sequence import (
    EngineClient,
    EngineOverloaded,
    FinishReason,
    GenerationFailed,
    Sequence,
    TokenEvent,
)
from rayserve.spec import BASE, ServeArgs
from rayserve.text import IncrementalDecoder, StopMatcher, encode, render_chat, token_bytes

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


# prompts up to this many bytes are tokenized on the event loop: a thread hop costs more
INLINE_TOKENIZE_BYTES = 4096


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log probability and its most likely alternatives, as text."""

    token: str
    logprob: float
    top: tuple[tuple[str, float, bytes], ...] = ()
    bytes: bytes = b""  # what the token stands for (a piece of a character decodes to U+FFFD)


@dataclass
class Chunk:
    """A piece of streamed output; the last one has ``finish_reason``. ``logprobs`` covers
    the tokens generated since the previous chunk (when the request asked for them)."""

    text: str
    finish_reason: FinishReason | None = None
    completion_tokens: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class Completion:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[TokenLogprob] = field(default_factory=list)


async def merge(streams: list[AsyncIterator[Chunk]]) -> AsyncIterator[tuple[int, Chunk]]:
    """The chunks of several choices as they come, each with its choice's index. One stream
    is read directly (no task per request); closing the merge closes every stream."""
    if len(streams) == 1:
        async with aclosing(streams[0]) as only:
            async for c in only:
                yield 0, c
        return
    queue: asyncio.Queue[tuple[int, Chunk | BaseException | None]] = asyncio.Queue()

    async def pump(i: int, s: AsyncIterator[Chunk]) -> None:
        try:
            async with aclosing(s):
                async for c in s:
                    await queue.put((i, c))
            await queue.put((i, None))
        except BaseException as e:  # surfaced to the reader, which re-raises it
            await queue.put((i, e))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        left = len(tasks)
        while left:
            i, item = await queue.get()
            if item is None:
                left -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()


async def collect(chunks: AsyncIterator[Chunk]) -> Completion:
    """Join a stream into one ``Completion`` (``prompt_tokens`` left 0 for the caller)."""
    parts: list[str] = []
    out = Completion("", FinishReason.LENGTH, 0, 0)
    async for c in chunks:
        parts.append(c.text)
        out.completion_tokens = c.completion_tokens
        out.finish_reason = c.finish_reason or out.finish_reason
        out.logprobs.extend(c.logprobs)
    out.text = "".join(parts)
    return out


def build_pipeline(args: ServeArgs, num_layers: int) -> Pipeline:
    """In-process for one worker; Ray actors in the replica's placement group for more."""
    if args.parallel.workers == 1 and args.parallel.tensor_parallel == 1:
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
            prefill_chunk=args.engine.prefill_chunk_tokens,
        )
        self.created = int(time.time())
        # the longest vocabulary entry in bytes: a prompt of B bytes has at least B / this many
        # tokens, so a prompt that cannot fit the context is refused before it is tokenized
        self.max_token_bytes = max((len(t.encode()) for t in self.tokenizer.get_vocab()), default=1)
        self._tokenize_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-tokenize")
        self._token_text = lru_cache(maxsize=65536)(self._decode_one)

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

    async def prepare(self, req: GenerationRequest) -> PreparedRequest:
        """Route, tokenize and budget ``req``: 404 for a model not served here, 400 for a prompt
        or a token limit that cannot fit the context window (or a chat the model's template
        refuses). A long prompt is tokenized on a worker thread, so the event loop keeps
        streaming the other requests' tokens meanwhile."""
        adapter = self.adapter_for(req.model)
        prompt = req.prompt_input()
        size = self._check_bytes(prompt)
        if size <= INLINE_TOKENIZE_BYTES:
            ids, text = self._tokenize(prompt)
        else:
            loop = asyncio.get_running_loop()
            ids, text = await loop.run_in_executor(self._tokenize_pool, self._tokenize, prompt)
        self._check_room(len(ids))  # a prompt past the window must say so, not blame a limit
        requested, param = req.token_limit(len(ids), self.context)
        max_new = self.budget(len(ids), requested, param)
        params = req.to_sampling_params(max_new, len(ids))
        return PreparedRequest(ids, params, adapter, req.stops(), text, req.model or self.model_name)

    def _tokenize(self, prompt: PromptInput) -> tuple[list[int], str]:
        """The prompt's token ids and the text they stand for."""
        if prompt.messages is not None:
            try:
                text = render_chat(self.tokenizer, prompt.messages)
            except TemplateError as e:  # e.g. roles that do not alternate: the caller's to fix
                why = clip(str(e), 300)
                msg = f"the model's chat template refused the messages: {why}"
                raise RequestError(400, msg, param="messages") from None
            return encode(self.tokenizer, text, chat=True), text
        if prompt.token_ids is not None:
            ids = prompt.token_ids
            if max(ids) >= len(self.tokenizer) or min(ids) < 0:
                raise RequestError(400, "prompt token ids out of the vocabulary range", param="prompt")
            return ids, self.tokenizer.decode(ids)
        text = prompt.text or ""
        return encode(self.tokenizer, text, chat=False), text

    def _check_bytes(self, prompt: PromptInput) -> int:
        """The prompt's size in bytes; 400 when even that many bytes make too many tokens."""
        if prompt.token_ids is not None:
            return 0
        if prompt.messages is not None:
            size = sum(len(c.encode()) for _, c in prompt.messages)
        else:
            size = len((prompt.text or "").encode())
        if size > self.context * self.max_token_bytes:
            raise RequestError(
                400,
                f"prompt is {size} bytes, more than {self.context} tokens can hold; this model's maximum "
                f"context length is {self.context}",
                param="messages" if prompt.messages is not None else "prompt",
            )
        return size

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
        return self.streams(req, 1)[0]

    def streams(self, req: PreparedRequest, n: int) -> list[AsyncIterator[Chunk]]:
        """``n`` choices of one request, each its own engine sequence (a seeded request's
        choice ``i`` samples with ``seed + i``, so the choices differ yet reproduce). All or
        none are queued: when the engine refuses one, those already queued are cancelled."""
        if not req.prompt_ids:  # the engine refuses it; say so as a 400, not a 500
            raise RequestError(400, "the prompt is empty: send at least one token of text", param="prompt")
        seqs: list[Sequence] = []
        try:
            for i in range(n):
                params = req.params
                if i and params.seed is not None:
                    params = params.model_copy(update={"seed": (params.seed + i) % 2**63})
                seqs.append(self.engine.submit(req.prompt_ids, params, req.adapter))
        except EngineOverloaded as e:
            for seq in seqs:
                seq.cancelled = True
            raise RequestError(429, f"server busy: {e}; retry later", kind="rate_limit_error") from e
        return [self._text(self.engine.stream(seq), req.stops) for seq in seqs]

    async def _text(self, events: AsyncIterator[TokenEvent], stops: list[str] | None) -> AsyncIterator[Chunk]:
        decoder, matcher, count = IncrementalDecoder(self.tokenizer), StopMatcher(stops), 0
        logprobs: list[TokenLogprob] = []
        try:
            async for ev in events:
                count += 1  # every generated token counts, the stop token too
                if ev.logprob is not None:
                    logprobs.append(self._logprob(ev))
                text = ""
                if ev.finish_reason is not FinishReason.STOP:  # a stop token is not text
                    text = matcher.feed(decoder.push(ev.token_id))
                    if matcher.stopped:
                        yield Chunk(text, FinishReason.STOP, count, logprobs)
                        return
                    if ev.finish_reason is None:
                        if text:
                            yield Chunk(text, None, count, logprobs)
                            logprobs = []
                        continue
                tail = text + matcher.feed(decoder.flush()) + matcher.flush()
                yield Chunk(tail, ev.finish_reason, count, logprobs)
                return
        except GenerationFailed as e:  # the replica's model failed under it: 503, say why
            cause = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise RequestError(503, f"{clip(cause, 300)}; retry", kind="server_error") from e
        finally:
            await events.aclose()

    def _decode_one(self, token_id: int) -> tuple[str, bytes]:
        return self.tokenizer.decode([token_id], skip_special_tokens=False), token_bytes(
            self.tokenizer, token_id
        )

    def _logprob(self, ev: TokenEvent) -> TokenLogprob:
        top = tuple((*self._token_text(t), lp) for t, lp in ev.top_logprobs)
        text, raw = self._token_text(ev.token_id)
        return TokenLogprob(text, ev.logprob or 0.0, tuple((t, lp, b) for t, b, lp in top), raw)

    async def complete(self, req: PreparedRequest) -> Completion:
        out = await collect(self.stream(req))
        out.prompt_tokens = len(req.prompt_ids)
        return out

    async def close(self) -> None:
        self._tokenize_pool.shutdown(wait=False)
        await self.engine.close()
