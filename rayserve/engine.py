"""Continuous batching: one loop decodes every running sequence together, and new requests
join (or finished ones leave) between decode steps.

Why not ``@serve.batch``: it batches whole requests, so a short request waits for the
longest one in its batch and a request arriving mid-generation waits for the whole batch.
Here each step: (1) finished or cancelled rows are dropped, (2) waiting requests are
prefilled as a group into a side cache and merged into the running batch, (3) one decode
step runs for all rows. A group of long prompts is prefilled ``prefill_chunk`` columns per
step (chunked prefill, as vLLM does), so the running rows still get a token between chunks:
one long prompt delays every other stream's next token by one chunk, not by its whole prompt.
Which rows run, and the cache ops that go with them, is the pure ``rayserve.scheduler``'s
decision; this module turns it into tensors and forwards. Cache
surgery rides along with the next forward as ops (``rayserve.cacheops``), so sharded stages
apply them without extra round trips.

The engine knows tokens only; text, HTTP and metrics live in the layers above.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import torch

from rayserve.cacheops import CacheOp, MergeFrom, Reset, Select
from rayserve.kvcache import MaskMirror
from rayserve.params import SamplingParams
from rayserve.pipeline import Pipeline
from rayserve.sampling import RowSampler, pick_tokens, token_logprobs
from rayserve.scheduler import Scheduler
from rayserve.sequence import Sequence, TokenEvent, stream_events
from rayserve.spec import BASE
from rayserve.stage import StageInput

log = logging.getLogger(__name__)


@dataclass
class _GroupPrefill:
    """A group being prefilled: its left-padded prompts and how many columns are done."""

    seqs: list[Sequence]
    ids: torch.Tensor  # [rows, width]
    valid: torch.Tensor  # [rows, width] bool
    done: int = 0

    @property
    def width(self) -> int:
        return int(self.ids.shape[1])


@dataclass
class EngineStats:
    """Observability hooks; ``rayserve.metrics`` plugs Prometheus in here."""

    on_batch: Callable[[int], None] = lambda size: None
    on_queue: Callable[[int, int], None] = lambda waiting, running: None
    on_first_token: Callable[[float], None] = lambda seconds: None
    on_tokens: Callable[[int], None] = lambda n: None


class Engine:
    """One continuous batch over ``pipeline``; see module docstring. Use ``generate`` (or
    ``submit`` + ``stream``) from any coroutine."""

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
        prefill_chunk: int | None = None,
    ) -> None:
        if prefill_chunk is not None and prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be at least 1, got {prefill_chunk}")
        self.pipeline = pipeline
        self.prefill_chunk = prefill_chunk  # prompt columns per prefill forward; None: all at once
        self._group: _GroupPrefill | None = None  # the group whose prefill is under way
        # cache keys on the stages: engines sharing a pipeline must not share batches
        self._main, self._prefill_key = f"{name}main", f"{name}prefill"
        self.scheduler = Scheduler(max_batch_size, max_waiting, kv_budget_tokens, self._prefill_key)
        self.eos_ids = sorted(eos_ids)
        self._eos = frozenset(eos_ids)
        self.has_adapters = has_adapters
        self.stats = stats or EngineStats()
        self._mask = MaskMirror()
        self._side = MaskMirror()  # the mask of the group being prefilled
        self._pending_ops: list[CacheOp] = []
        self._ids = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.steps = 0
        self.error: BaseException | None = None

    # --- public ---------------------------------------------------------------------------
    @property
    def running(self) -> list[Sequence]:
        return self.scheduler.running

    @property
    def waiting(self) -> deque[Sequence]:
        return self.scheduler.waiting

    @property
    def queue_depth(self) -> int:
        return len(self.scheduler.waiting)

    def submit(self, prompt: list[int], params: SamplingParams, adapter: str = BASE) -> Sequence:
        """Queue a sequence now (raising ``EngineOverloaded`` at once when full); read it
        with ``stream``."""
        if not prompt:
            raise ValueError("empty prompt")
        seq = Sequence(next(self._ids), list(prompt), params, adapter, RowSampler(params))
        self.scheduler.add(seq)
        self._ensure_loop()
        self._wake.set()
        return seq

    @staticmethod
    def stream(seq: Sequence) -> AsyncIterator[TokenEvent]:
        """Yield ``seq``'s tokens as they are decoded; leaving early cancels the sequence."""
        return stream_events(seq)

    async def generate(
        self, prompt: list[int], params: SamplingParams, adapter: str = BASE
    ) -> AsyncIterator[TokenEvent]:
        """``submit`` + ``stream`` in one call."""
        async for ev in self.stream(self.submit(prompt, params, adapter)):
            yield ev

    def stop(self) -> None:
        """Stop the loop, leaving the pipeline open (engines of a group share one)."""
        if self._task:
            self._task.cancel()

    async def close(self) -> None:
        self.stop()
        await self.pipeline.close()

    # --- the loop -------------------------------------------------------------------------
    def _ensure_loop(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="llm-engine")

    async def _loop(self) -> None:
        while True:
            if not self.scheduler.has_work:
                self._wake.clear()
                self.stats.on_queue(0, 0)
                await self._wake.wait()
                continue
            try:
                await self._step()
            except Exception as e:  # a failed forward fails its batch, not the server
                log.exception("engine step failed")
                self.error = e
                self._group = None
                for seq in self.scheduler.abort_all():
                    seq.fail(e)
                self._apply([Reset()])
            await asyncio.sleep(0)  # let handlers enqueue / read between steps

    async def _step(self) -> None:
        plan = self.scheduler.schedule()
        self._apply(plan.ops)
        self.stats.on_queue(self.queue_depth, len(self.running) + len(self.scheduler.prefilling))
        if plan.admitted:
            self._group = self._pad(plan.admitted)
        if self._group is not None and all(s.cancelled for s in self._group.seqs):
            self._group = None  # every client left mid-prefill: stop computing their prompts
            self.scheduler.abandon_prefill()
        if self._group is not None:
            group = self._group
            if await self._prefill_chunk(group):
                self._group = None
                self._apply(self.scheduler.join(group.seqs))
        if self.running:
            await self._decode()
        self.steps += 1

    def _apply(self, ops: list[CacheOp]) -> None:
        """Mirror the scheduler's ops on the mask now; queue them for the stages' caches,
        which apply them with the next forward (a ``Reset`` makes earlier ones moot)."""
        for op in ops:
            if isinstance(op, MergeFrom):
                self._mask.merge(self._side)
                self._side = MaskMirror()
                self._pending_ops.append(op)
            elif isinstance(op, Reset):
                self._mask.reset()
                self._pending_ops = [op]
            elif isinstance(op, Select):
                self._mask.apply(op)
                self._pending_ops.append(op)

    def _adapters(self, seqs: list[Sequence]) -> list[str] | None:
        return [s.adapter for s in seqs] if self.has_adapters else None

    @staticmethod
    def _pad(seqs: list[Sequence]) -> _GroupPrefill:
        """Left-pad the new prompts into one ``[rows, width]`` batch."""
        width = max(len(s.prompt) for s in seqs)
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        valid = torch.zeros(len(seqs), width, dtype=torch.bool)
        for row, s in enumerate(seqs):
            ids[row, width - len(s.prompt) :] = torch.tensor(s.prompt)
            valid[row, width - len(s.prompt) :] = True
        return _GroupPrefill(seqs, ids, valid)

    async def _prefill_chunk(self, group: _GroupPrefill) -> bool:
        """Forward the group's next ``prefill_chunk`` columns into the side cache; after the last
        one, take each row's first token and return True (the scheduler's ``MergeFrom`` then
        merges that cache into the main batch)."""
        start = group.done
        end = group.width if self.prefill_chunk is None else min(group.width, start + self.prefill_chunk)
        if start == 0:
            self._side = MaskMirror()
        mask, positions = self._side.extend(group.valid[:, start:end])
        ops = (Reset(),) if start == 0 else ()
        self.stats.on_batch(len(group.seqs))
        logits = await self.pipeline.forward(
            group.ids[:, start:end],
            StageInput(mask, positions, self._prefill_key, ops, self._adapters(group.seqs)),
        )
        group.done = end
        if end < group.width:
            return False
        now = time.monotonic()
        for s in group.seqs:
            self.stats.on_first_token(now - s.submitted)
        self._emit(group.seqs, logits)
        return True

    async def _decode(self) -> None:
        last = torch.tensor([[s.generated[-1]] for s in self.running], dtype=torch.long)
        mask, positions = self._mask.extend(torch.ones(len(self.running), 1, dtype=torch.bool))
        ops, self._pending_ops = tuple(self._pending_ops), []
        self.stats.on_batch(len(self.running))
        logits = await self.pipeline.forward(
            last, StageInput(mask, positions, self._main, ops, self._adapters(self.running))
        )
        self._emit(self.running, logits)

    def _emit(self, seqs: list[Sequence], logits: torch.Tensor) -> None:
        tokens = pick_tokens(logits, [s.sampler for s in seqs], [s.generated for s in seqs], self.eos_ids)
        lps = token_logprobs(logits, tokens, [s.params.logprobs for s in seqs])
        for s, tok, (lp, top) in zip(seqs, tokens, lps, strict=True):
            s.out.put_nowait(s.append(tok, self._eos, lp, top))
        self.stats.on_tokens(len(seqs))
