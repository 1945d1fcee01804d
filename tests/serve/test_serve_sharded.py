"""Pipeline parallelism on real Ray actors: the sharded model must decode exactly what the
unsharded one does (greedy, token for token), with requests joining and leaving mid-batch."""

from __future__ import annotations

import asyncio

import pytest
import torch

from rayserve.engine_group import EngineGroup
from rayserve.loading import load_model, load_tokenizer
from rayserve.pipeline import RayPipeline
from rayserve.sampling import SamplingParams
from rayserve.spec import ModelSpec, ParallelSpec

pytestmark = pytest.mark.serve

PROMPTS = ["hello world", "the model is a very fast gpu cluster node", "one two three", "kaito workspace"]
LENGTHS = [5, 14, 9, 11]


def _reference(spec: ModelSpec) -> list[list[int]]:
    model, tok = load_model(spec), load_tokenizer(spec)
    out = []
    for p, n in zip(PROMPTS, LENGTHS, strict=True):
        ids = tok(p, return_tensors="pt").input_ids
        gen = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None)
        out.append(gen[0, ids.shape[1] :].tolist())
    return out


@pytest.mark.parametrize("workers", [2, 4])  # 4: one layer per stage
def test_sharded_greedy_equals_unsharded(ray_serve, tiny_model, workers):
    spec = ModelSpec(name="tiny", path=str(tiny_model))
    expected = _reference(spec)
    tok = load_tokenizer(spec)
    pipe = RayPipeline.start(spec, [], ParallelSpec(workers=workers, cpus_per_worker=0.1), num_layers=4)

    async def run() -> list[list[int]]:
        # two batches in flight (stages overlap), 2 rows each: 4 requests, so rows join later
        engine = EngineGroup(pipe, eos_ids=set(), batches=2, max_batch_size=4)

        async def one(i: int) -> list[int]:
            await asyncio.sleep(0.02 * i)
            params = SamplingParams(max_new_tokens=LENGTHS[i])
            return [ev.token_id async for ev in engine.generate(tok(PROMPTS[i]).input_ids, params)]

        try:
            info = await pipe.info()
            assert [(s["start"], s["end"]) for s in info] == [
                (i * 4 // workers, (i + 1) * 4 // workers) for i in range(workers)
            ]
            return await asyncio.gather(*[one(i) for i in range(len(PROMPTS))])
        finally:
            await engine.close()

    assert asyncio.run(run()) == expected


def test_stage_memory_is_split(tiny_model):
    """A stage reads and keeps only its layers (that is what lets a big model fit N GPUs);
    tests/unit/rayserve/test_rayserve_stage_loading.py checks the partial load in detail."""
    from rayserve.loading import load_stage_model
    from rayserve.stage import PipelineStage

    spec, cpu = ModelSpec(name="tiny", path=str(tiny_model)), torch.device("cpu")
    full = sum(p.numel() for p in load_model(spec).parameters())
    part = PipelineStage(load_stage_model(spec, 2, 4, cpu), 2, 4, cpu, prune=True)
    kept = sum(p.numel() for p in part.model.parameters())
    assert part.is_last and not part.is_first and kept < full * 0.75
