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
from rayserve.tensor_parallel import shard_ends, shard_layers

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
