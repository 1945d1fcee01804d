"""One tensor-parallel rank of a stage: load it, and (without Ray) drive the ranks in step.

Why a leader: every rank of a group must run the same forwards in the same order, or the
all-reduces pair up wrong and hang. On Ray the coordinator sends each forward to every rank
of a stage (``rayserve.pipeline.RayPipeline``); in a plain process group (one
``torch.multiprocessing`` process per rank, as the CPU tests run it) rank 0 holds the engine
and broadcasts each forward's inputs, and the other ranks follow. Every rank computes whole
logits (the LM head is replicated), so the leader's answer needs no gather.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import torch
import torch.distributed as dist

from rayserve.loading import load_stage_model, resolve_dtype
from rayserve.pipeline import LocalPipeline
from rayserve.spec import AdapterSpec, ModelSpec
from rayserve.stage import PipelineStage, StageInput
from rayserve.tensor_parallel import param_bytes, shard_ends, shard_layers

CPU = torch.device("cpu")


def load_tp_stage(
    spec: ModelSpec,
    start: int,
    end: int,
    rank: int,
    world: int,
    device: torch.device,
    adapters: Sequence[AdapterSpec] = (),
    group=None,
) -> PipelineStage:
    """Stage ``[start, end)`` holding rank ``rank``'s share of its layers, on ``device``.

    The stage's tensors are read onto the CPU, pruned and sliced there, and only the slice is
    moved to ``device`` (``PipelineStage`` moves it), so a GPU never holds the whole stage.
    The dtype is the one meant for ``device``, as an unsharded stage on it would load.
    """
    dtype = str(resolve_dtype(spec, device)).removeprefix("torch.")
    model = load_stage_model(spec.model_copy(update={"dtype": dtype}), start, end, CPU, adapters)
    shard_layers(model.model.layers[start:end], rank, world, group)  # the other layers are on meta
    shard_ends(model, start == 0, end == len(model.model.layers), rank, world, group)
    return PipelineStage(model, start, end, device, prune=True)


class LeaderPipeline(LocalPipeline):
    """Rank 0's pipeline: broadcast each forward's inputs to the followers, then run it."""

    def _run(self, x: torch.Tensor, inp: StageInput) -> torch.Tensor:
        dist.broadcast_object_list([x, inp], src=0)
        return super()._run(x, inp)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(
            self._pool, dist.broadcast_object_list, [None, None], 0
        )
        await super().close()


def follow(stages: list[PipelineStage]) -> int:
    """A follower rank's loop: run every forward the leader broadcasts until it closes.
    Returns the number of forwards run."""
    done = 0
    while True:
        msg: list = [None, None]
        dist.broadcast_object_list(msg, src=0)
        x, inp = msg
        if x is None:
            return done
        for stage in stages:
            x = stage.forward(x, inp)
        done += 1


class TPStageWorker:
    """Ray actor body of one tensor-parallel rank of one stage.

    Why two steps (construct, then ``load``): the ranks must agree on a rendezvous address
    before any of them can join the group, and only rank 0, on its node, can pick a free
    port there (``rendezvous``). The actor places itself on the GPU Ray assigned it: with one
    GPU per rank Ray makes only that one visible, so ``pick_device`` gives it as ``cuda:0``.
    """

    def __init__(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world
        self.stage: PipelineStage | None = None

    def rendezvous(self) -> tuple[str, int]:
        import ray

        from rayserve.tensor_parallel import free_port

        host = ray.util.get_node_ip_address()
        return host, free_port(host)

    def load(
        self, spec: dict, adapters: list[dict], start: int, end: int, gpus: float, address: str, port: int
    ) -> None:
        from rayserve.loading import pick_device
        from rayserve.tensor_parallel import init_group

        device = pick_device(gpus)
        init_group(self.rank, self.world, address, port, device)
        model_spec = ModelSpec.model_validate(spec)
        adapter_specs = [AdapterSpec.model_validate(a) for a in adapters]
        self.stage = load_tp_stage(model_spec, start, end, self.rank, self.world, device, adapter_specs)

    def forward(self, x: torch.Tensor, inp: StageInput) -> torch.Tensor | None:
        """Every rank computes the same output; only rank 0's travels on."""
        out = self.stage.forward(x, inp)
        return out if self.rank == 0 else None

    def info(self) -> dict:
        import ray

        return {
            "start": self.stage.start,
            "end": self.stage.end,
            "rank": self.rank,
            "world": self.world,
            "device": str(self.stage.device),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "param_bytes": param_bytes(self.stage.model),
            "cache_bytes": self.stage.cache_bytes(),
        }


def start_tp_stages(
    spec: ModelSpec, adapters: Sequence[AdapterSpec], ranges: list[tuple[int, int]], parallel, pg
) -> list[list]:
    """``parallel.tensor_parallel`` rank actors per stage, all in that stage's bundle of ``pg``;
    returns them per stage once every rank has loaded (rank 0 first)."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    tp = parallel.tensor_parallel
    actor_cls = ray.remote(TPStageWorker)
    stages = [
        [
            actor_cls.options(
                num_cpus=parallel.cpus_per_worker / tp,
                num_gpus=parallel.gpus_per_worker / tp,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=pg, placement_group_bundle_index=i
                ),
            ).remote(rank, tp)
            for rank in range(tp)
        ]
        for i in range(len(ranges))
    ]
    addresses = ray.get([ranks[0].rendezvous.remote() for ranks in stages], timeout=120)
    args = (spec.model_dump(), [a.model_dump() for a in adapters])
    gpus = parallel.gpus_per_worker / tp
    ray.get(
        [
            w.load.remote(*args, a, b, gpus, host, port)
            for ranks, (a, b), (host, port) in zip(stages, ranges, addresses, strict=True)
            for w in ranks
        ],
        timeout=600,
    )
    return stages
