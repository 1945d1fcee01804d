"""Run a forward through all pipeline stages: in this process, or across Ray actors.

Why two backends behind one interface: with one worker per replica the model lives inside
the Serve replica (no hop, lowest latency); with N workers each stage is a Ray actor pinned
to one bundle of the replica's placement group (one GPU each), and the coordinator chains
the calls - stage i's output ObjectRef is stage i+1's argument, so hidden states go actor
to actor without a round trip through the coordinator. With tensor parallelism a stage is
several rank actors in its bundle (``rayserve.tp_group``); each gets every forward of its
stage. The engine only sees ``forward``.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import torch

from rayserve.loading import load_model, load_stage_model, pick_device
from rayserve.spec import AdapterSpec, ModelSpec, ParallelSpec
from rayserve.stage import PipelineStage, StageInput, decoder_layers, split_layers

log = logging.getLogger(__name__)


class Pipeline(Protocol):
    """The model as the engine sees it: token ids in, last-position logits out."""

    async def forward(self, x: torch.Tensor, inp: StageInput) -> torch.Tensor: ...

    async def close(self) -> None: ...


class LocalPipeline:
    """All stages in this process; forwards run on one worker thread so the event loop (HTTP,
    streaming) stays responsive while torch computes."""

    def __init__(self, stages: list[PipelineStage]) -> None:
        self.stages = stages
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-forward")

    @classmethod
    def load(
        cls, spec: ModelSpec, adapters: list[AdapterSpec] = (), stages: int = 1, gpus: float | None = None
    ) -> LocalPipeline:
        device = pick_device(gpus)
        model = load_model(spec, device, adapters)
        n = len(decoder_layers(model))
        return cls([PipelineStage(model, a, b, device) for a, b in split_layers(n, stages)])

    @property
    def model(self):
        return self.stages[0].model

    def _run(self, x: torch.Tensor, inp: StageInput) -> torch.Tensor:
        for stage in self.stages:
            x = stage.forward(x, inp)
        return x

    async def forward(self, x: torch.Tensor, inp: StageInput) -> torch.Tensor:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, x, inp)

    async def close(self) -> None:
        self._pool.shutdown(wait=False)


class StageWorker:
    """Ray actor body holding one stage. Reads only its share of the checkpoint (its layers,
    plus the embedding / final norm and LM head on the first / last stage) onto its device
    (its GPU when the bundle has one), so an actor never needs the whole model in memory;
    see ``rayserve.loading.load_stage_model``."""

    def __init__(self, spec: dict, adapters: list[dict], start: int, end: int, gpus: float) -> None:
        model_spec = ModelSpec.model_validate(spec)
        device = pick_device(gpus)
        adapter_specs = [AdapterSpec.model_validate(a) for a in adapters]
        model = load_stage_model(model_spec, start, end, device, adapter_specs)
        self.stage = PipelineStage(model, start, end, device, prune=True)
        log.info("stage [%d, %d) of %s on %s", start, end, model_spec.name, device)

    def forward(self, x: torch.Tensor, inp: StageInput) -> torch.Tensor:
        return self.stage.forward(x, inp)

    def info(self) -> dict:
        return {
            "start": self.stage.start,
            "end": self.stage.end,
            "device": str(self.stage.device),
            "cache_bytes": self.stage.cache_bytes(),
        }


class RayPipeline:
    """One Ray actor per stage, each in its own bundle of the replica's placement group.

    Inside a Serve replica deployed with ``placement_group_bundles`` the group already exists
    (``get_current_placement_group``); elsewhere (tests, scripts) we create one and remove it
    on close.
    """

    def __init__(self, workers: list, owned_pg=None, stages: list[list] | None = None) -> None:
        self.workers = workers  # every actor (health checks, kill)
        self.stages = stages or [[w] for w in workers]  # per stage, its tensor-parallel ranks
        self._owned_pg = owned_pg

    @classmethod
    def start(
        cls, spec: ModelSpec, adapters: list[AdapterSpec], parallel: ParallelSpec, num_layers: int
    ) -> RayPipeline:
        import ray
        from ray.util.placement_group import get_current_placement_group, placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        ranges = split_layers(num_layers, parallel.workers)
        pg, owned = get_current_placement_group(), None
        if pg is None or len(pg.bundle_specs) < len(ranges):
            bundle = {"CPU": parallel.cpus_per_worker}
            if parallel.gpus_per_worker:
                bundle["GPU"] = parallel.gpus_per_worker
            pg = owned = placement_group([dict(bundle) for _ in ranges], strategy="PACK")
            ray.get(pg.ready(), timeout=120)
        if parallel.tensor_parallel > 1:
            from rayserve.tp_group import start_tp_stages

            stages = start_tp_stages(spec, adapters, ranges, parallel, pg)
            return cls([w for ranks in stages for w in ranks], owned, stages)
        actor_cls = ray.remote(StageWorker)
        workers = [
            actor_cls.options(
                num_cpus=parallel.cpus_per_worker,
                num_gpus=parallel.gpus_per_worker,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=pg, placement_group_bundle_index=i
                ),
            ).remote(spec.model_dump(), [a.model_dump() for a in adapters], a, b, parallel.gpus_per_worker)
            for i, (a, b) in enumerate(ranges)
        ]
        ray.get([w.info.remote() for w in workers], timeout=600)  # surface load errors now
        return cls(workers, owned)

    async def forward(self, x: torch.Tensor, inp: StageInput) -> torch.Tensor:
        ref = x
        for ranks in self.stages:
            # every rank runs the forward, all submitted now so their order agrees; rank 0's goes on
            refs = [w.forward.remote(ref, inp) for w in ranks]
            ref = refs[0]
        return await ref

    async def info(self) -> list[dict]:
        return [await w.info.remote() for w in self.workers]

    async def close(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        for w in self.workers:
            ray.kill(w)
        if self._owned_pg is not None:
            remove_placement_group(self._owned_pg)
