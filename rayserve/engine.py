"""Continuous batching: one scheduler loop decodes every running sequence together, and new
requests join (or finished ones leave) between decode steps.

Why not ``@serve.batch``: it batches whole requests, so a short request waits for the
longest one in its batch and a request arriving mid-generation waits for the whole batch.
Here each step: (1) finished or cancelled rows are dropped, (2) waiting requests are
prefilled as a group into a side cache and merged into the running batch, (3) one decode
step runs for all rows. Cache surgery is expressed as ops (``rayserve.kvcache``) that ride
along with the next forward, so sharded stages apply them without extra round trips.

The engine knows tokens only; text, HTTP and metrics live in the layers above.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import torch

from rayserve.adapters import BASE
from rayserve.kvcache import CacheOp, MaskMirror, MergeFrom, Reset
from rayserve.pipeline import Pipeline
from rayserve.sampling import RowSampler, SamplingParams, pick_tokens
from rayserve.stage import StageInput

log = logging.getLogger(__name__)


class EngineOverloaded(Exception):
    """More requests wait than the engine accepts; the HTTP layer answers 429."""


class GenerationFailed(RuntimeError):
    """A forward failed (a stage actor died, a device error); the HTTP layer answers 503."""


@dataclass
class TokenEvent:
    """One generated token; ``finish_reason`` is set on the last one ("stop" or "length")."""

    token_id: int | None
    finish_reason: str | None = None


@dataclass
class _Seq:
    id: int
    prompt: list[int]
    params: SamplingParams
    adapter: str
    sampler: RowSampler
    out: asyncio.Queue[TokenEvent] = field(default_factory=asyncio.Queue)
    generated: list[int] = field(default_factory=list)
    cancelled: bool = False
    finished: bool = False
    error: BaseException | None = None
    submitted: float = field(default_factory=time.monotonic)


def _final_len(seq: _Seq) -> int:
    """The most tokens ``seq`` can occupy in the KV cache: prompt + every token it may generate."""
    return len(seq.prompt) + seq.params.max_new_tokens


@dataclass
class EngineStats:
    """Observability hooks; ``rayserve.metrics`` plugs Prometheus in here."""

    on_batch: Callable[[int], None] = lambda size: None
    on_queue: Callable[[int, int], None] = lambda waiting, running: None
    on_first_token: Callable[[float], None] = lambda seconds: None
    on_tokens: Callable[[int], None] = lambda n: None


class Engine:
    """The scheduler; see module docstring. Use ``generate`` from any coroutine."""

    def __init__(
        self,
        pipeline: Pipeline,
        eos_ids: set[int],
        max_batch_size: int = 16,
        max_waiting: int = 64,
        has_adapters: bool = False,
        stats: EngineStats | None = None,
        name: str = "",
        kv_budget_tokens: int | None = None,
    ) -> None:
        self.pipeline = pipeline
        # rows x time the KV cache may hold at once (None: unbounded); see _fits
        self.kv_budget_tokens = kv_budget_tokens
        # cache keys on the stages: engines sharing a pipeline must not share batches
        self._main, self._prefill_key = f"{name}main", f"{name}prefill"
        self.eos_ids = sorted(eos_ids)
        self.max_batch_size = max_batch_size
        self.max_waiting = max_waiting
        self.has_adapters = has_adapters
        self.stats = stats or EngineStats()
        self.waiting: deque[_Seq] = deque()
        self.running: list[_Seq] = []
        self._admitting: list[_Seq] = []
        self._mask = MaskMirror()
        self._pending_ops: list[CacheOp] = []
        self._ids = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.steps = 0
        self.error: BaseException | None = None

    # --- public ---------------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        return len(self.waiting)

    def submit(self, prompt: list[int], params: SamplingParams, adapter: str = BASE) -> _Seq:
        """Queue a sequence now (raising ``EngineOverloaded`` at once when full); read it
        with ``stream``."""
        if not prompt:
            raise ValueError("empty prompt")
        if self._full():
            self.waiting = deque(s for s in self.waiting if not s.cancelled)  # gone clients don't count
            if self._full():
                raise EngineOverloaded(f"{len(self.waiting)} requests already waiting")
        seq = _Seq(next(self._ids), list(prompt), params, adapter, RowSampler(params))
        self.waiting.append(seq)
        self._ensure_loop()
        self._wake.set()
        return seq

    def _full(self) -> bool:
        return len(self.waiting) >= self.max_waiting + max(0, self.max_batch_size - len(self.running))

    @staticmethod
    async def stream(seq: _Seq) -> AsyncIterator[TokenEvent]:
        """Yield ``seq``'s tokens as they are decoded; leaving early cancels the sequence."""
        try:
            while True:
                ev = await seq.out.get()
                if ev.token_id is None and ev.finish_reason == "error":
                    raise GenerationFailed(f"generation failed: {seq.error!r}")
                yield ev
                if ev.finish_reason:
                    return
        finally:
            seq.cancelled = True

    async def generate(
        self, prompt: list[int], params: SamplingParams, adapter: str = BASE
    ) -> AsyncIterator[TokenEvent]:
        """``submit`` + ``stream`` in one call."""
        async for ev in self.stream(self.submit(prompt, params, adapter)):
            yield ev

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
        await self.pipeline.close()

    # --- the loop -------------------------------------------------------------------------
    def _ensure_loop(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="llm-engine")

    async def _loop(self) -> None:
        while True:
            if not self.waiting and not self.running:
                self._wake.clear()
                self.stats.on_queue(0, 0)
                await self._wake.wait()
                continue
            try:
                await self._step()
            except Exception as e:  # a failed forward fails its batch, not the server
                log.exception("engine step failed")
                self.error = e
                for seq in [*self._admitting, *self.running, *self.waiting]:
                    seq.error = e
                    seq.out.put_nowait(TokenEvent(None, "error"))
                self.running, self.waiting, self._admitting = [], deque(), []
                self._mask.reset()
                self._pending_ops = [Reset()]
            await asyncio.sleep(0)  # let handlers enqueue / read between steps

    async def _step(self) -> None:
        self._drop_done()
        admitted = self._admit()
        self.stats.on_queue(len(self.waiting), len(self.running) + len(admitted))
        if admitted:
            self._admitting = admitted  # owned by no list while prefilling: fail them too on error
            await self._prefill(admitted)
            self._admitting = []
        self._drop_done()
        if self.running:
            await self._decode()
        self.steps += 1

    def _admit(self) -> list[_Seq]:
        """Waiting sequences that join now, first come first served: the head of the queue
        waits (and nothing overtakes it) while the batch has no room for it."""
        out: list[_Seq] = []
        peak = max((_final_len(s) for s in self.running), default=0)
        while self.waiting and len(self.running) + len(out) < self.max_batch_size:
            seq = self.waiting[0]
            if seq.cancelled:
                self.waiting.popleft()
                continue
            rows, longest = len(self.running) + len(out) + 1, max(peak, _final_len(seq))
            if not self._fits(rows, longest):
                break
            out.append(self.waiting.popleft())
            peak = longest
        return out

    def _fits(self, rows: int, longest: int) -> bool:
        """Whether a batch of ``rows`` whose longest sequence may reach ``longest`` tokens fits
        the KV budget. The cache is one ``[rows, time]`` tensor per layer, right-aligned, whose
        time axis is trimmed to the longest live row, so ``rows x longest`` bounds it for the
        whole life of the batch: admitting by it means no out-of-memory error mid-generation.
        One sequence alone is always admitted: the estimator caps the served context to one
        batch's share of the budget (``presets.estimator.served_context``)."""
        return self.kv_budget_tokens is None or rows == 1 or rows * longest <= self.kv_budget_tokens

    def _drop_done(self) -> None:
        keep = [i for i, s in enumerate(self.running) if not (s.finished or s.cancelled)]
        if len(keep) == len(self.running):
            return
        self.running = [self.running[i] for i in keep]
        if not keep:
            self._mask.reset()
            self._pending_ops = [Reset()]
        else:
            self._pending_ops.append(self._mask.select(keep))

    def _adapters(self, seqs: list[_Seq]) -> list[str] | None:
        return [s.adapter for s in seqs] if self.has_adapters else None

    async def _prefill(self, seqs: list[_Seq]) -> None:
        """Left-pad the new prompts into one batch, fill a side cache, take their first token,
        and schedule the side cache to merge into the main batch on the next decode."""
        width = max(len(s.prompt) for s in seqs)
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        valid = torch.zeros(len(seqs), width, dtype=torch.bool)
        for row, s in enumerate(seqs):
            ids[row, width - len(s.prompt) :] = torch.tensor(s.prompt)
            valid[row, width - len(s.prompt) :] = True
        side = MaskMirror()
        mask, positions = side.extend(valid)
        self.stats.on_batch(len(seqs))
        logits = await self.pipeline.forward(
            ids, StageInput(mask, positions, self._prefill_key, (Reset(),), self._adapters(seqs))
        )
        now = time.monotonic()
        for s in seqs:
            self.stats.on_first_token(now - s.submitted)
        self._emit(seqs, logits)
        self._mask.merge(side)
        self._pending_ops.append(MergeFrom(self._prefill_key))
        self.running.extend(seqs)

    async def _decode(self) -> None:
        last = torch.tensor([[s.generated[-1]] for s in self.running], dtype=torch.long)
        mask, positions = self._mask.extend(torch.ones(len(self.running), 1, dtype=torch.bool))
        ops, self._pending_ops = tuple(self._pending_ops), []
        self.stats.on_batch(len(self.running))
        logits = await self.pipeline.forward(
            last, StageInput(mask, positions, self._main, ops, self._adapters(self.running))
        )
        self._emit(self.running, logits)

    def _emit(self, seqs: list[_Seq], logits: torch.Tensor) -> None:
        tokens = pick_tokens(logits, [s.sampler for s in seqs], [s.generated for s in seqs], self.eos_ids)
        eos = set(self.eos_ids)
        for s, tok in zip(seqs, tokens, strict=True):
            s.generated.append(tok)
            reason = None
            if tok in eos and not s.params.ignore_eos and len(s.generated) > s.params.min_new_tokens:
                reason = "stop"
            elif len(s.generated) >= s.params.max_new_tokens:
                reason = "length"
            s.finished = reason is not None
            s.out.put_nowait(TokenEvent(None if reason == "stop" else tok, reason))
        self.stats.on_tokens(len(seqs))
