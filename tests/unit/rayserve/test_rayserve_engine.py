"""The continuous-batching scheduler against a fake model: joins, leaves, limits, failures."""

from __future__ import annotations

import asyncio
import itertools

import pytest
import torch

from rayserve.cacheops import Select
from rayserve.engine import Engine
from rayserve.kvcache import MaskMirror, apply_ops
from rayserve.sampling import SamplingParams
from rayserve.sequence import EngineClient, EngineOverloaded, FinishReason
from rayserve.stage import StageInput

VOCAB = 50


class CountingModel:
    """Next token = last token + 1 (mod VOCAB). Mirrors the cache ops on a mask like a real
    stage would, so a row-order mix-up in the engine shows up as wrong tokens."""

    def __init__(self, delay: float = 0.0, fail_at: int | None = None) -> None:
        self.batches: list[int] = []
        self.delay, self.fail_at = delay, fail_at
        self.rows: dict[str, list[int]] = {}

    async def forward(self, x: torch.Tensor, inp: StageInput) -> torch.Tensor:
        await asyncio.sleep(self.delay)
        if self.fail_at is not None and len(self.batches) == self.fail_at:
            self.fail_at = None
            raise RuntimeError("boom")
        self.batches.append(x.shape[0])
        apply_ops({}, inp.cache_key, inp.ops)  # ops must be well-formed
        assert inp.mask.shape[0] == x.shape[0] and inp.positions.shape == x.shape
        nxt = (x[:, -1] + 1) % VOCAB
        return torch.nn.functional.one_hot(nxt, VOCAB).float()

    async def close(self) -> None:
        pass


def _run(coro):
    return asyncio.run(coro)


def test_sequences_join_and_leave_between_steps():
    model = CountingModel(delay=0.001)

    async def main():
        engine = Engine(model, eos_ids={49}, max_batch_size=2)

        async def ask(start: int, n: int, delay: float) -> list[int]:
            await asyncio.sleep(delay)
            return [e async for e in engine.generate([start], SamplingParams(max_new_tokens=n))]

        out = await asyncio.gather(ask(0, 6, 0), ask(10, 2, 0), ask(20, 3, 0.002), ask(45, 10, 0))
        await engine.close()
        return out

    outs = _run(main())
    a, b, c, d = (_ids(events) for events in outs)
    assert a == [1, 2, 3, 4, 5, 6] and b == [11, 12] and c == [21, 22, 23]
    assert d == [46, 47, 48, 49]  # 49 is eos: it comes with the final event, as the stop token
    finals = [events[-1].finish_reason for events in outs]
    assert finals == [FinishReason.LENGTH, FinishReason.LENGTH, FinishReason.LENGTH, FinishReason.STOP]
    assert max(model.batches) == 2 and len(model.batches) < 6 + 2 + 3 + 4


def test_overload_is_immediate_and_cancel_frees_the_slot():
    model = CountingModel(delay=0.01)

    async def main():
        engine = Engine(model, eos_ids=set(), max_batch_size=1, max_waiting=1)
        first = engine.generate([1], SamplingParams(max_new_tokens=1000))
        assert (await first.__anext__()).token_id == 2
        engine.submit([5], SamplingParams(max_new_tokens=2))  # waits
        with pytest.raises(EngineOverloaded):
            engine.submit([7], SamplingParams(max_new_tokens=2))
        await first.aclose()  # client went away
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not engine.running and not engine.waiting:
                break
        assert not engine.running and not engine.waiting
        await engine.close()

    _run(main())


def test_kv_budget_holds_back_sequences_that_would_outgrow_it():
    """Budget 40 token-rows: two sequences that may reach 20 tokens fit, a third waits (FIFO)
    until one finishes; results are unchanged, and the batch never exceeded the budget."""
    model = CountingModel(delay=0.001)

    async def main():
        engine = Engine(model, eos_ids=set(), max_batch_size=8, kv_budget_tokens=40)
        seen: list[int] = []
        real_schedule = engine.scheduler.schedule

        def schedule():
            plan = real_schedule()
            rows = [*engine.running, *plan.admitted]
            if rows:
                seen.append(len(rows) * max(q.final_len for q in rows))
            return plan

        engine.scheduler.schedule = schedule  # type: ignore[method-assign]

        async def ask(start: int) -> list[int]:
            return await _tokens(engine.generate([start] * 4, SamplingParams(max_new_tokens=16)))

        outs = await asyncio.gather(ask(0), ask(10), ask(20))
        await engine.close()
        return outs, seen

    outs, seen = _run(main())
    assert outs[0][:3] == [1, 2, 3] and outs[2][:3] == [21, 22, 23] and all(len(o) == 16 for o in outs)
    assert max(model.batches) == 2, "the third sequence joined only after one had finished"
    assert max(seen) <= 40


def test_a_sequence_longer_than_the_budget_still_runs_alone():
    model = CountingModel()

    async def main():
        engine = Engine(model, eos_ids=set(), max_batch_size=4, kv_budget_tokens=8)
        out = await _tokens(engine.generate([1, 2, 3], SamplingParams(max_new_tokens=10)))
        await engine.close()
        return out

    assert len(_run(main())) == 10


@pytest.mark.parametrize("fail_at", [0, 1], ids=["prefill", "decode"])
def test_a_failed_forward_fails_its_requests_not_the_engine(fail_at):
    model = CountingModel(fail_at=fail_at)

    async def main():
        engine = Engine(model, eos_ids=set(), max_batch_size=4)
        with pytest.raises(RuntimeError, match="boom"):
            [e async for e in engine.generate([1], SamplingParams(max_new_tokens=5))]
        again = [e.token_id async for e in engine.generate([3], SamplingParams(max_new_tokens=2))]
        await engine.close()
        return again

    assert _run(main()) == [4, 5]


def test_mask_mirror_follows_the_schedulers_selection():
    m = MaskMirror()
    m.extend(torch.tensor([[True, True, True], [False, True, True]]))
    m.apply(Select(rows=(1,), drop_left=1))
    assert m.batch == 1 and m.mask.tolist() == [[True, True]]
    with pytest.raises(AssertionError, match="trims columns"):
        m.apply(Select(rows=(0,), drop_left=1))


class TwoStagePipeline(CountingModel):
    """Two stages that each take a while and serve one call at a time, like stage actors;
    records how many stages were busy at once."""

    def __init__(self) -> None:
        super().__init__()
        self.locks = [asyncio.Lock(), asyncio.Lock()]
        self.busy = self.max_busy = 0

    async def forward(self, x: torch.Tensor, inp: StageInput) -> torch.Tensor:
        for lock in self.locks:
            async with lock:
                self.busy += 1
                self.max_busy = max(self.max_busy, self.busy)
                await asyncio.sleep(0.003)
                self.busy -= 1
        return await super().forward(x, inp)


@pytest.mark.parametrize("batches", [1, 2])
def test_engine_group_keeps_stages_busy_together(batches):
    from rayserve.engine_group import EngineGroup

    pipe = TwoStagePipeline()

    async def main():
        group = EngineGroup(pipe, eos_ids=set(), batches=batches, max_batch_size=4)
        assert isinstance(group, EngineClient) and isinstance(group.engines[0], EngineClient)
        outs = await asyncio.gather(
            *[
                (lambda s: _tokens(group.generate([s], SamplingParams(max_new_tokens=6))))(start)
                for start in (0, 10, 20, 30)
            ]
        )
        assert len({id(s) for s in group.running}) == 0 and group.steps > 0
        await group.close()
        return outs

    outs = asyncio.run(main())
    assert outs == [[s + i for i in range(1, 7)] for s in (0, 10, 20, 30)]
    assert pipe.max_busy == batches  # one batch: stages take turns; two: both work at once


async def _tokens(events) -> list[int]:
    return [e.token_id async for e in events]


def _ids(events) -> list[int]:
    return [e.token_id for e in events]


class ChunkRecordingModel(CountingModel):
    """Records each forward as (cache key, rows, columns)."""

    def __init__(self) -> None:
        super().__init__(delay=0.001)
        self.calls: list[tuple[str, int, int]] = []

    async def forward(self, x: torch.Tensor, inp: StageInput) -> torch.Tensor:
        self.calls.append((inp.cache_key, x.shape[0], x.shape[1]))
        return await super().forward(x, inp)


def test_a_long_prompt_is_prefilled_in_chunks_with_decode_steps_between():
    """A 10-token prompt with chunks of 3: forwards of 3, 3, 3 and 1 columns, and the running
    stream decodes a token between every two of them; both streams' tokens are unchanged."""
    model = ChunkRecordingModel()

    async def main():
        engine = Engine(model, eos_ids=set(), max_batch_size=4, prefill_chunk=3)
        running = engine.generate([1], SamplingParams(max_new_tokens=20))
        first = [(await running.__anext__()).token_id]
        long = _tokens(engine.generate(list(range(20, 30)), SamplingParams(max_new_tokens=3)))
        outs = await asyncio.gather(_tokens(running), long)
        await engine.close()
        return first + outs[0], outs[1]

    a, b = _run(main())
    assert a == list(range(2, 22)) and b == [30, 31, 32]
    keys = [key for key, _, _ in model.calls]
    chunks = [(i, cols) for i, (key, _, cols) in enumerate(model.calls) if key == "prefill" and i > 0]
    assert [cols for _, cols in chunks] == [3, 3, 3, 1]
    for (i, _), (j, _) in itertools.pairwise(chunks):
        assert "main" in keys[i + 1 : j], f"no decode step between prefill chunks: {model.calls}"


def test_an_unchunked_engine_prefills_a_prompt_in_one_forward():
    model = ChunkRecordingModel()

    async def main():
        engine = Engine(model, eos_ids=set(), max_batch_size=4, prefill_chunk=None)
        out = await _tokens(engine.generate(list(range(20, 30)), SamplingParams(max_new_tokens=2)))
        await engine.close()
        return out

    assert _run(main()) == [30, 31]
    assert [c for c in model.calls if c[0] == "prefill"] == [("prefill", 1, 10)]


def test_a_chunked_prompt_alone_is_prefilled_to_the_end():
    """Nothing else waiting or running: the loop must keep stepping through the chunks (the
    group being prefilled is work), not go idle after the first."""
    model = ChunkRecordingModel()

    async def main():
        engine = Engine(model, eos_ids=set(), max_batch_size=4, prefill_chunk=4)
        events = engine.generate(list(range(9)), SamplingParams(max_new_tokens=2))
        out = await asyncio.wait_for(_tokens(events), 10)
        await engine.close()
        return out

    assert _run(main()) == [9, 10]
    assert [cols for key, _, cols in model.calls if key == "prefill"] == [4, 4, 1]


def test_a_prefill_whose_clients_all_left_stops_between_chunks():
    model = ChunkRecordingModel()

    async def main():
        engine = Engine(model, eos_ids=set(), max_batch_size=4, prefill_chunk=2)
        seq = engine.submit(list(range(40)), SamplingParams(max_new_tokens=5))
        while not model.calls:
            await asyncio.sleep(0.001)
        seq.cancelled = True  # what leaving the stream does
        for _ in range(200):
            await asyncio.sleep(0.005)
            if not engine.scheduler.has_work:
                break
        assert not engine.scheduler.has_work
        after = await _tokens(engine.generate([3], SamplingParams(max_new_tokens=2)))
        await engine.close()
        return after

    assert _run(main()) == [4, 5]  # the engine serves on
    prefills = [cols for key, _, cols in model.calls if key == "prefill"]
    assert len(prefills) < 20, f"the 20-chunk prompt ran to its end for nobody: {prefills}"
    assert not any(key == "main" and rows > 1 for key, rows, _ in model.calls)  # never merged
