"""Tensor parallelism on real Ray actors (CPU, gloo): each stage is two rank actors in its
bundle, and the replica decodes exactly what the unsharded model does (greedy, token for
token, rows joining and leaving), while each rank holds half of its stage's weights."""

from __future__ import annotations

import asyncio

import pytest
import torch

from rayserve.engine_group import EngineGroup
from rayserve.loading import load_stage_model, load_tokenizer
from rayserve.pipeline import RayPipeline
from rayserve.sampling import SamplingParams
from rayserve.spec import ModelSpec, ParallelSpec
from rayserve.stage import PipelineStage, split_layers
from rayserve.tensor_parallel import param_bytes
from tests.serve.conftest import ensure_serve, tiny_args, wait_for
from tests.serve.test_serve_sharded import LENGTHS, PROMPTS, _reference

pytestmark = pytest.mark.serve


@pytest.mark.parametrize("workers", [1, 2], ids=["tp2", "tp2xpp2"])
def test_tensor_parallel_greedy_equals_unsharded(ray_serve, tiny_model, workers):
    spec = ModelSpec(name="tiny", path=str(tiny_model))
    expected, tok = _reference(spec), load_tokenizer(spec)
    parallel = ParallelSpec(workers=workers, tensor_parallel=2, cpus_per_worker=0.2)
    pipe = RayPipeline.start(spec, [], parallel, num_layers=4)
    cpu = torch.device("cpu")
    whole = [
        param_bytes(PipelineStage(load_stage_model(spec, a, b, cpu), a, b, cpu, prune=True).model)
        for a, b in split_layers(4, workers)
    ]

    async def run() -> tuple[list[list[int]], list[dict]]:
        engine = EngineGroup(pipe, eos_ids=set(), batches=workers, max_batch_size=4)

        async def one(i: int) -> list[int]:
            await asyncio.sleep(0.02 * i)
            params = SamplingParams(max_new_tokens=LENGTHS[i])
            return [ev.token_id async for ev in engine.generate(tok(PROMPTS[i]).input_ids, params)]

        try:
            tokens = await asyncio.gather(*[one(i) for i in range(len(PROMPTS))])
            return tokens, await pipe.info()
        finally:
            await engine.close()

    tokens, info = asyncio.run(run())
    assert tokens == expected
    assert [(s["start"], s["rank"]) for s in info] == [
        (a, r) for a, _ in split_layers(4, workers) for r in (0, 1)
    ]
    for s in info:
        stage = [a for a, _ in split_layers(4, workers)].index(s["start"])
        assert 0.49 < s["param_bytes"] / whole[stage] < 0.52


def test_served_replica_with_tensor_parallel_answers_the_unsharded_text(ray_serve, tiny_model):
    """The whole served path: a Serve replica whose one stage is two rank actors (ParallelSpec
    from the serve args, as the controller writes them) answers /v1/completions, concurrently,
    with the unsharded model's greedy text; its health check reaches both ranks."""
    import concurrent.futures as cf

    import httpx
    from ray import serve

    from rayserve.app import LLMServer

    spec = ModelSpec(name="tiny", path=str(tiny_model))
    tok = load_tokenizer(spec)
    expected = [tok.decode(t, skip_special_tokens=True) for t in _reference(spec)]
    args = tiny_args(tiny_model, parallel={"workers": 1, "tensor_parallel": 2, "cpus_per_worker": 0.2})
    app = LLMServer.options(ray_actor_options={"num_cpus": 0.1}, health_check_period_s=1).bind(args)
    ensure_serve(ray_serve)  # an earlier test may have shut Serve down (see ensure_serve)
    serve.run(app, name="tp2", route_prefix="/tp2")
    try:
        # serve.run returns once the replica is healthy; the proxy may take its routes a moment later
        wait_for(lambda: httpx.get(f"{ray_serve.http_url}/tp2/v1/models", timeout=10).status_code == 200,
                 what="the tp2 route to answer")

        def complete(i: int) -> str:
            body = {"prompt": PROMPTS[i], "max_tokens": LENGTHS[i], "temperature": 0, "ignore_eos": True}
            r = httpx.post(f"{ray_serve.http_url}/tp2/v1/completions", json=body, timeout=120)
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["text"]

        with cf.ThreadPoolExecutor(len(PROMPTS)) as pool:
            assert list(pool.map(complete, range(len(PROMPTS)))) == expected
    finally:
        serve.delete("tp2")
