"""The engine's scheduling decisions, as pure bookkeeping over sequences (no torch, no I/O).

Why apart from the engine loop (as vLLM's ``v1/core/sched`` sits beside its engine core):
which requests wait, which join the batch, which rows stay and how the cache must change are
decisions over lists and integers. Here they can be unit-tested step by step; the engine
(``rayserve.engine``) only turns them into tensors and forwards.

One step of the engine asks, in order:

1. ``schedule()``: drop the rows that finished or were cancelled (a ``Select`` or ``Reset``
   op), then admit waiting sequences first come first served while the batch has room;
2. the engine prefills the admitted ones (their first token), in one forward or, for long
   prompts, a chunk per step with the running rows decoding between chunks (``schedule``
   admits no one while a group is ``prefilling``);
3. ``join(admitted)``: they merge into the running batch (``MergeFrom``), and rows that
   ended meanwhile (done at their first token, cancelled during the prefill) leave;
4. the engine decodes one token for every row of ``running``.

Row lengths follow from the sequences themselves: every row's cache is a right-aligned
suffix of the batch's time axis (prompts are left-padded, merges left-pad, decodes append a
column to all rows), and the time axis is always as long as the longest row. So the columns
a selection may trim are known without looking at a mask.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from rayserve.cacheops import CacheOp, MergeFrom, Reset, Select
from rayserve.sequence import EngineOverloaded, Sequence


@dataclass
class Schedule:
    """What one step does before its decode: cache ops to apply, sequences to prefill."""

    ops: list[CacheOp] = field(default_factory=list)
    admitted: list[Sequence] = field(default_factory=list)


class Scheduler:
    """The waiting queue and the running batch of one engine, with its limits."""

    def __init__(
        self,
        max_batch_size: int = 16,
        max_waiting: int = 64,
        kv_budget_tokens: int | None = None,
        prefill_key: str = "prefill",
    ) -> None:
        self.max_batch_size = max_batch_size
        self.max_waiting = max_waiting
        # rows x time the KV cache may hold at once (None: unbounded); see fits
        self.kv_budget_tokens = kv_budget_tokens
        self.prefill_key = prefill_key  # the side cache admitted sequences are prefilled into
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.prefilling: list[Sequence] = []  # admitted, not yet joined: owned by neither list

    # --- admission control ---------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        """Queue ``seq``, or raise ``EngineOverloaded`` at once when the queue is full."""
        if self._full():
            self.waiting = deque(s for s in self.waiting if not s.cancelled)  # gone clients don't count
            if self._full():
                raise EngineOverloaded(f"{len(self.waiting)} requests already waiting")
        self.waiting.append(seq)

    def _full(self) -> bool:
        return len(self.waiting) >= self.max_waiting + max(0, self.max_batch_size - len(self.running))

    @property
    def has_work(self) -> bool:
        """Anything to step for: waiting, running, or a group whose prefill is under way."""
        return bool(self.waiting or self.running or self.prefilling)

    # --- one step --------------------------------------------------------------------------
    def schedule(self) -> Schedule:
        """Drop ended rows, then admit what fits; admitted sequences are ``prefilling``. While a
        group is still ``prefilling`` (chunk by chunk, over several steps) no one else joins."""
        ops = self._drop_done()
        if self.prefilling:
            return Schedule(ops, [])
        self.prefilling = self._admit()
        return Schedule(ops, list(self.prefilling))

    def join(self, admitted: list[Sequence]) -> list[CacheOp]:
        """Prefilled ``admitted`` join the running batch; rows that ended meanwhile leave."""
        self.running.extend(admitted)
        self.prefilling = []
        return [MergeFrom(self.prefill_key), *self._drop_done()]

    def abandon_prefill(self) -> None:
        """Every sequence of the group being prefilled was cancelled: forget them without a merge
        (their side cache is reset by the next group's first forward)."""
        self.prefilling = []

    def abort_all(self) -> list[Sequence]:
        """Forget every sequence (a forward failed); the caller fails them and resets caches."""
        seqs = [*self.prefilling, *self.running, *self.waiting]
        self.prefilling, self.running, self.waiting = [], [], deque()
        return seqs

    def _admit(self) -> list[Sequence]:
        """Waiting sequences that join now, first come first served: the head of the queue
        waits (and nothing overtakes it) while the batch has no room for it."""
        out: list[Sequence] = []
        peak = max((s.final_len for s in self.running), default=0)
        while self.waiting and len(self.running) + len(out) < self.max_batch_size:
            seq = self.waiting[0]
            if seq.cancelled:
                self.waiting.popleft()
                continue
            rows, longest = len(self.running) + len(out) + 1, max(peak, seq.final_len)
            if not self.fits(rows, longest):
                break
            out.append(self.waiting.popleft())
            peak = longest
        return out

    def fits(self, rows: int, longest: int) -> bool:
        """Whether a batch of ``rows`` whose longest sequence may reach ``longest`` tokens fits
        the KV budget. The cache is one ``[rows, time]`` tensor per layer, right-aligned, whose
        time axis is trimmed to the longest live row, so ``rows x longest`` bounds it for the
        whole life of the batch: admitting by it means no out-of-memory error mid-generation.
        One sequence alone is always admitted: the estimator caps the served context to one
        batch's share of the budget (``presets.estimator.served_context``)."""
        return self.kv_budget_tokens is None or rows == 1 or rows * longest <= self.kv_budget_tokens

    def _drop_done(self) -> list[CacheOp]:
        """The op that removes ended rows: none, a ``Select`` of the rest (trimming columns
        only the dropped rows used), or a ``Reset`` when no row is left."""
        keep = [i for i, s in enumerate(self.running) if not s.done]
        if len(keep) == len(self.running):
            return []
        width = max(s.cached_len for s in self.running)
        self.running = [self.running[i] for i in keep]
        if not self.running:
            return [Reset()]
        return [Select(tuple(keep), drop_left=width - max(s.cached_len for s in self.running))]
