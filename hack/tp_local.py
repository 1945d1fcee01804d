"""Run a tensor x pipeline parallel model as a gloo group of local processes, no Ray.

Why: the CPU tests and the stage-memory benchmark need real ranks (separate processes, real
all-reduces) without a Ray cluster. ``run_group`` spawns ``world`` processes with
``torch.multiprocessing``; each loads its share of every pipeline stage
(``rayserve.tp_group.load_tp_stage``), rank 0 runs the continuous-batching ``Engine`` over
them and the others follow its broadcasts. Each rank reports the bytes of weights it holds.

``python -m hack.tp_local --model DIR --tp 2 --pp 2`` prints the per-rank report as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

PROMPTS = [[5, 9, 23, 7], [11, 3, 42, 8, 19, 27, 6, 2, 31], [14, 15, 16], [40, 41, 12, 13, 25]]
LENGTHS = [5, 14, 9, 11]


async def generate(
    pipeline, prompts=PROMPTS, lengths=LENGTHS, batch: int = 2, row_adapters: list[str] | None = None
) -> list[list[int]]:
    """Greedy tokens of ``prompts`` through ``pipeline`` with continuous batching: ``batch``
    rows at a time and staggered arrivals, so rows join and leave a running batch.
    ``row_adapters``: prompt ``i`` asks for adapter ``row_adapters[i]`` (``BASE`` for none)."""
    from rayserve.engine import Engine
    from rayserve.params import SamplingParams
    from rayserve.spec import BASE

    engine = Engine(pipeline, eos_ids=set(), max_batch_size=batch, has_adapters=row_adapters is not None)

    async def one(i: int) -> list[int]:
        await asyncio.sleep(0.02 * i)
        params = SamplingParams(max_new_tokens=lengths[i])
        adapter = row_adapters[i] if row_adapters else BASE
        return [ev.token_id async for ev in engine.generate(prompts[i], params, adapter)]

    try:
        return list(await asyncio.gather(*[one(i) for i in range(len(prompts))]))
    finally:
        await engine.close()


def _rank(
    rank: int,
    world: int,
    pp: int,
    port: int,
    model: str,
    out: str,
    adapters: list[dict],
    rows: list[str] | None,
) -> None:
    """One process: join the group, load this rank's share of every stage, lead or follow."""
    import torch
    import torch.distributed as dist
    from torch import nn

    from rayserve.spec import AdapterSpec, ModelSpec
    from rayserve.stage import split_layers
    from rayserve.tensor_parallel import init_group, param_bytes
    from rayserve.tp_group import LeaderPipeline, follow, load_tp_stage

    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    init_group(rank, world, "127.0.0.1", port, cpu)
    spec = ModelSpec(name="tp", path=model)
    from rayserve.loading import load_config

    layers = load_config(spec)[0].num_hidden_layers
    specs = [AdapterSpec.model_validate(a) for a in adapters]
    stages = [load_tp_stage(spec, a, b, rank, world, cpu, specs) for a, b in split_layers(layers, pp)]
    report = {
        "rank": rank,
        "stage_bytes": [param_bytes(s.model) for s in stages],
        "layer_bytes": [param_bytes(nn.ModuleList(s.layers)) for s in stages],
        "kv_heads": stages[0].layers[0].self_attn.config.num_key_value_heads,
    }
    if rank == 0:
        report["tokens"] = asyncio.run(generate(LeaderPipeline(stages), row_adapters=rows))
    else:
        report["forwards"] = follow(stages)
    report["cache_bytes"] = [s.cache_bytes(valid_only=True) for s in stages]
    dist.destroy_process_group()
    Path(out, f"{rank}.json").write_text(json.dumps(report))


def run_group(
    model: str | Path, tp: int, pp: int = 1, adapters: list[dict] = (), rows: list[str] | None = None
) -> list[dict]:
    """Spawn ``tp`` ranks (each holding all ``pp`` stages' shares); one report per rank.
    ``adapters``: ``AdapterSpec`` dicts every stage loads; ``rows``: each prompt's adapter."""
    import torch.multiprocessing as mp

    from rayserve.tensor_parallel import free_port

    with tempfile.TemporaryDirectory() as out:
        mp.start_processes(
            _rank,
            args=(tp, pp, free_port(), str(model), out, list(adapters), rows),
            nprocs=tp,
            start_method="spawn",
        )
        return [json.loads(Path(out, f"{r}.json").read_text()) for r in range(tp)]


def unsharded(
    model: str | Path, pp: int = 1, adapters: list[dict] = (), rows: list[str] | None = None
) -> dict:
    """The same report for the unsharded model in this process (the reference)."""
    import torch
    from torch import nn

    from rayserve.loading import load_config, load_stage_model
    from rayserve.pipeline import LocalPipeline
    from rayserve.spec import AdapterSpec, ModelSpec
    from rayserve.stage import PipelineStage, split_layers
    from rayserve.tensor_parallel import param_bytes

    specs = [AdapterSpec.model_validate(a) for a in adapters]
    cpu, spec = torch.device("cpu"), ModelSpec(name="tp", path=str(model))
    layers = load_config(spec)[0].num_hidden_layers
    stages = [
        PipelineStage(load_stage_model(spec, a, b, cpu, specs), a, b, cpu, prune=True)
        for a, b in split_layers(layers, pp)
    ]
    report = {
        "stage_bytes": [param_bytes(s.model) for s in stages],
        "layer_bytes": [param_bytes(nn.ModuleList(s.layers)) for s in stages],
        "tokens": asyncio.run(generate(LocalPipeline(stages), row_adapters=rows)),
    }
    report["cache_bytes"] = [s.cache_bytes(valid_only=True) for s in stages]
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--tp", type=int, default=2)
    p.add_argument("--pp", type=int, default=1)
    a = p.parse_args(argv)
    print(
        json.dumps({"unsharded": unsharded(a.model, a.pp), "ranks": run_group(a.model, a.tp, a.pp)}, indent=1)
    )


if __name__ == "__main__":
    main()
