"""The engine's public vocabulary: a sequence handle, its token events and finish reasons, the
two errors, and the ``EngineClient`` protocol that one engine and a group of them both speak.

Why one small torch-free module: the service above the engine and the scheduler inside it
both work with sequences, and neither should need torch (or the other) to do so. A sequence
is what ``submit`` returns and ``stream`` reads; the engine and the scheduler update its
state, callers only read it (and cancel it by leaving ``stream``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Container
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from rayserve.params import SamplingParams
from rayserve.spec import BASE

if TYPE_CHECKING:  # the sampler is torch's; the scheduler never touches it
    from rayserve.sampling import RowSampler


class FinishReason(StrEnum):
    """Why a sequence ended, in OpenAI's words (a ``str``, so it serializes as-is)."""

    STOP = "stop"  # a stop token (EOS) or, in the service, a stop string
    LENGTH = "length"  # max_new_tokens reached


class EngineOverloaded(Exception):
    """More requests wait than the engine accepts; the HTTP layer answers 429."""


class GenerationFailed(RuntimeError):
    """A forward failed (a stage actor died, a device error); the HTTP layer answers 503."""


@dataclass(frozen=True)
class TokenEvent:
    """One generated token; the last one has ``finish_reason``.

    With ``STOP`` the token is the stop token itself (EOS): it counts as generated (usage,
    like vLLM and OpenAI) but is not text, so the detokenizer skips it."""

    token_id: int
    finish_reason: FinishReason | None = None
    # with ``SamplingParams.logprobs``: the token's log probability under the model, and the
    # most likely ``logprobs`` tokens with theirs (most likely first)
    logprob: float | None = None
    top_logprobs: tuple[tuple[int, float], ...] = ()


@dataclass(eq=False)
class Sequence:
    """One request inside the engine: its prompt, limits, generated ids and fate."""

    id: int
    prompt: list[int]
    params: SamplingParams
    adapter: str = BASE
    sampler: RowSampler | None = None
    # TokenEvents, or the exception that failed the batch (``stream`` raises it)
    out: asyncio.Queue[TokenEvent | BaseException] = field(default_factory=asyncio.Queue)
    generated: list[int] = field(default_factory=list)
    cancelled: bool = False
    finished: bool = False
    error: BaseException | None = None
    submitted: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> bool:
        """Finished or cancelled: its row leaves the batch at the next scheduling decision."""
        return self.finished or self.cancelled

    @property
    def final_len(self) -> int:
        """The most tokens it can occupy in the KV cache: prompt + every token it may generate."""
        return len(self.prompt) + self.params.max_new_tokens

    @property
    def cached_len(self) -> int:
        """Tokens of it in the KV cache once prefilled: the prompt and every generated token
        but the last, which is fed in by the next decode step."""
        return len(self.prompt) + max(0, len(self.generated) - 1)

    def append(
        self,
        token: int,
        eos_ids: Container[int],
        logprob: float | None = None,
        top: tuple[tuple[int, float], ...] = (),
    ) -> TokenEvent:
        """Record a generated token and decide whether it ends the sequence."""
        self.generated.append(token)
        p, n = self.params, len(self.generated)
        reason = None
        if token in eos_ids and not p.ignore_eos and n > p.min_new_tokens:
            reason = FinishReason.STOP
        elif n >= p.max_new_tokens:
            reason = FinishReason.LENGTH
        self.finished = reason is not None
        return TokenEvent(token, reason, logprob, top)

    def fail(self, error: BaseException) -> None:
        """The batch it was in failed: ``stream`` raises ``GenerationFailed``."""
        self.error = error
        self.out.put_nowait(error)


@runtime_checkable
class EngineClient(Protocol):
    """What the service needs of an engine: ``Engine`` and ``EngineGroup`` both provide it."""

    @property
    def running(self) -> list[Sequence]: ...

    @property
    def queue_depth(self) -> int: ...

    @property
    def steps(self) -> int: ...

    def submit(self, prompt: list[int], params: SamplingParams, adapter: str = BASE) -> Sequence: ...

    def stream(self, seq: Sequence) -> AsyncIterator[TokenEvent]: ...

    def generate(
        self, prompt: list[int], params: SamplingParams, adapter: str = BASE
    ) -> AsyncIterator[TokenEvent]: ...

    async def close(self) -> None: ...


async def stream_events(seq: Sequence) -> AsyncIterator[TokenEvent]:
    """Yield ``seq``'s events as they are decoded; leaving early cancels the sequence."""
    try:
        while True:
            ev = await seq.out.get()
            if isinstance(ev, BaseException):
                raise GenerationFailed(f"generation failed: {ev!r}")
            yield ev
            if ev.finish_reason:
                return
    finally:
        seq.cancelled = True
