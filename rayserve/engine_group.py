"""Several independent batches over one pipeline, so pipeline stages work at the same time.

Why: with one batch, a pipeline-parallel model has one stage busy and the others idle - each
decode step walks stage 0, 1, ..., N-1 in turn. With K batches (micro-batches) in flight, while
batch A is in stage 1, batch B can be in stage 0. Each batch is simply an ``Engine`` with its
own cache keys; Ray actor calls from different engines interleave on the stage actors. For an
in-process pipeline (one worker) forwards serialize anyway, so K = 1 there.

New requests go to the engine with the least work; to the service the group is one more
``rayserve.sequence.EngineClient``, like a single ``Engine``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from rayserve.engine import Engine, EngineStats
from rayserve.params import SamplingParams
from rayserve.pipeline import Pipeline
from rayserve.sequence import EngineOverloaded, Sequence, TokenEvent, stream_events
from rayserve.spec import BASE


class EngineGroup:
    """``batches`` engines sharing ``pipeline``; limits are split between them."""

    def __init__(
        self,
        pipeline: Pipeline,
        eos_ids: set[int],
        batches: int = 1,
        max_batch_size: int = 16,
        max_waiting: int = 64,
        has_adapters: bool = False,
        stats: EngineStats | None = None,
        kv_budget_tokens: int | None = None,
        prefill_chunk: int | None = None,
    ) -> None:
        self.stats = stats or EngineStats()
        per_batch = max(1, max_batch_size // batches)
        per_wait = max(0, max_waiting // batches)
        # the batches in flight share the stages' memory: each gets its share of the budget
        per_kv = None if kv_budget_tokens is None else max(1, kv_budget_tokens // batches)
        own = EngineStats(
            on_batch=self.stats.on_batch,
            on_queue=lambda _w, _r: self.stats.on_queue(self.queue_depth, len(self.running)),
            on_first_token=self.stats.on_first_token,
            on_tokens=self.stats.on_tokens,
        )
        self.engines = [
            Engine(
                pipeline,
                eos_ids,
                per_batch,
                per_wait,
                has_adapters,
                own,
                name=f"b{i}-" if batches > 1 else "",
                kv_budget_tokens=per_kv,
                prefill_chunk=prefill_chunk,
            )
            for i in range(batches)
        ]
        self.pipeline = pipeline

    @property
    def running(self) -> list[Sequence]:
        return [s for e in self.engines for s in e.running]

    @property
    def queue_depth(self) -> int:
        return sum(e.queue_depth for e in self.engines)

    @property
    def steps(self) -> int:
        return sum(e.steps for e in self.engines)

    def submit(self, prompt: list[int], params: SamplingParams, adapter: str = BASE) -> Sequence:
        """Queue on the least busy engine; ``EngineOverloaded`` when even that one is full."""
        order = sorted(self.engines, key=lambda e: len(e.running) + e.queue_depth)
        for engine in order:
            try:
                return engine.submit(prompt, params, adapter)
            except EngineOverloaded:
                continue
        raise EngineOverloaded(f"{self.queue_depth} requests already waiting")

    @staticmethod
    def stream(seq: Sequence) -> AsyncIterator[TokenEvent]:
        return stream_events(seq)

    async def generate(
        self, prompt: list[int], params: SamplingParams, adapter: str = BASE
    ) -> AsyncIterator[TokenEvent]:
        async for ev in self.stream(self.submit(prompt, params, adapter)):
            yield ev

    async def close(self) -> None:
        for e in self.engines[1:]:
            e.stop()
        await self.engines[0].close()  # closes the shared pipeline once
