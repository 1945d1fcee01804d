"""Turn "serve this model, this way" into the ``serveConfigV2`` string a KubeRay RayService carries.

Why a pure function: the workspace controller must produce the same config for the same
Workspace every reconcile (it compares strings to decide whether to update the RayService),
and tests must be able to check it without a cluster. No Kubernetes and no Ray imports here.

Usage (controller side)::

    from rayserve.builder import ServeConfigInput, build_serve_config
    from rayserve.spec import ModelSpec

    yaml_text = build_serve_config(ServeConfigInput(
        model=ModelSpec(name="phi-3-mini-4k-instruct", path="/models/phi-3", max_context=4096),
        workers_per_replica=2, gpus_per_worker=1,
        autoscaling=AutoscalingSpec(min_replicas=1, max_replicas=4),
    ))

Layout of one replica:

* ``workers_per_replica == 1``: the Serve replica holds the whole model and asks for
  ``gpus_per_worker`` GPUs itself; no placement group.
* ``workers_per_replica == N > 1``: a placement group of N bundles per replica. The replica
  (the coordinator: tokenizer, scheduler, HTTP) sits in bundle 0 with CPU only; stage ``i``
  of the pipeline is an actor in bundle ``i`` with ``gpus_per_worker`` GPUs. Bundle 0 thus
  holds the replica's CPUs plus stage 0's CPUs and GPUs. ``PACK`` lets stages spill over
  nodes (one GPU per pod works); ``STRICT_PACK`` keeps them on one node.
* ``tensor_parallel == T > 1`` (any ``N``): the same placement group; stage ``i`` is ``T``
  rank actors in bundle ``i``, ``gpus_per_worker / T`` GPUs each.
"""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rayserve.spec import REPLICA_ENV, AdapterSpec, EngineSpec, ModelSpec, ParallelSpec, ServeArgs

IMPORT_PATH = "rayserve.app:build_app"
DEPLOYMENT_NAME = "LLMServer"  # must match rayserve.app.DEPLOYMENT_NAME (kept import-free)


SHARDED_HEALTH_CHECK_PERIOD_S = 2.0


class AutoscalingSpec(BaseModel):
    """Serve's ``autoscaling_config`` (only the keys Ray 2.60 honours; old names are ignored
    silently by Ray, so we never emit them)."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    target_ongoing_requests: float = Field(8, gt=0, description="per replica; ~ the batch you want")
    upscale_delay_s: float = Field(30, ge=0)
    downscale_delay_s: float = Field(300, ge=0)
    look_back_period_s: float = Field(30, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")
        if self.initial_replicas is not None and not (
            self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError("initial_replicas must lie within [min_replicas, max_replicas]")
        return self


class ServeConfigInput(BaseModel):
    """Everything ``build_serve_config`` needs. Defaults suit one GPU per replica."""

    model_config = ConfigDict(extra="forbid")

    model: ModelSpec
    adapters: list[AdapterSpec] = Field(default_factory=list)
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    workers_per_replica: int = Field(1, ge=1, description="pipeline stages (GPU workers) per model replica")
    gpus_per_worker: float = Field(1, ge=0, description="0 for CPU-only clusters")
    cpus_per_worker: float = Field(1, ge=0)
    tensor_parallel: int = Field(
        1, ge=1, description="rank actors per stage, sharing its bundle's GPUs (rayserve.tensor_parallel)"
    )
    replica_cpus: float = Field(1, ge=0, description="the coordinator replica's own CPUs")
    placement_strategy: Literal["PACK", "STRICT_PACK", "SPREAD", "STRICT_SPREAD"] = "PACK"
    engine: EngineSpec = Field(default_factory=EngineSpec)
    max_queued_requests: int = Field(64, ge=-1, description="past this Serve answers 503; -1 = unbounded")
    serve_port: int = Field(8000, ge=1, le=65535)
    app_name: str = Field("llm", min_length=1)
    route_prefix: str = Field("/", pattern=r"^/")
    runtime_env: dict[str, Any] = Field(default_factory=dict)
    request_timeout_s: float | None = Field(None, gt=0)
    api_key_env: str | None = Field(None, description="see ServeArgs.api_key_env")

    @model_validator(mode="after")
    def _coherent(self) -> ServeConfigInput:
        ongoing = self.max_ongoing_requests()
        if self.autoscaling.target_ongoing_requests > ongoing:
            raise ValueError(
                f"target_ongoing_requests {self.autoscaling.target_ongoing_requests} exceeds "
                f"max_ongoing_requests {ongoing} (max_batch_size + max_waiting + 1)"
            )
        ServeArgs.model_validate(self.serve_args())  # adapter names unique etc.
        return self

    def max_ongoing_requests(self) -> int:
        """A replica takes its batch plus its wait queue; beyond that the engine says 429."""
        return self.engine.max_batch_size + self.engine.max_waiting + 1

    def serve_args(self) -> dict[str, Any]:
        return ServeArgs(
            model=self.model,
            adapters=self.adapters,
            parallel=ParallelSpec(
                workers=self.workers_per_replica,
                gpus_per_worker=self.gpus_per_worker,
                cpus_per_worker=self.cpus_per_worker,
                tensor_parallel=self.tensor_parallel,
            ),
            engine=self.engine,
            api_key_env=self.api_key_env,
        ).model_dump(mode="json", exclude=self._defaults_left_out())

    def _defaults_left_out(self) -> dict[str, Any]:
        """Fields newer than a workspace's serve config, left out at their defaults: no key and
        no tensor parallelism keep the serve config (bytes) a workspace always had."""
        out: dict[str, Any] = {}
        if self.api_key_env is None:
            out["api_key_env"] = True
        if self.tensor_parallel == 1:
            out["parallel"] = {"tensor_parallel"}
        return out


def _bundle(cpus: float, gpus: float) -> dict[str, float]:
    b: dict[str, float] = {"CPU": cpus}
    if gpus:
        b["GPU"] = gpus
    return b


def _in_replica(spec: ServeConfigInput) -> bool:
    """Whether the replica holds the model itself (no stage actors, no placement group)."""
    return spec.workers_per_replica == 1 and spec.tensor_parallel == 1


def deployment_config(spec: ServeConfigInput) -> dict[str, Any]:
    """The ``deployments[0]`` entry: scaling, admission limits and resources of a replica."""
    a = spec.autoscaling
    autoscaling: dict[str, Any] = {
        "min_replicas": a.min_replicas,
        "max_replicas": a.max_replicas,
        "target_ongoing_requests": a.target_ongoing_requests,
        "upscale_delay_s": a.upscale_delay_s,
        "downscale_delay_s": a.downscale_delay_s,
        "look_back_period_s": a.look_back_period_s,
    }
    if a.initial_replicas is not None:
        autoscaling["initial_replicas"] = a.initial_replicas
    dep: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "max_ongoing_requests": spec.max_ongoing_requests(),
        "max_queued_requests": spec.max_queued_requests,
        "autoscaling_config": autoscaling,
        # Serve health-checks a replica only once its constructor (the model load) is done. A
        # sharded replica's check pings every stage actor, so a dead stage is found within the
        # period: short for sharded replicas (each failed request until then is a 503)
        "health_check_period_s": 10 if _in_replica(spec) else SHARDED_HEALTH_CHECK_PERIOD_S,
        "health_check_timeout_s": 60,
        "graceful_shutdown_timeout_s": 30,
    }
    n, g = spec.workers_per_replica, spec.gpus_per_worker
    if _in_replica(spec):
        dep["ray_actor_options"] = {"num_cpus": spec.replica_cpus, "num_gpus": g}
    else:
        dep["ray_actor_options"] = {"num_cpus": spec.replica_cpus, "num_gpus": 0}
        dep["placement_group_bundles"] = [_bundle(spec.replica_cpus + spec.cpus_per_worker, g)] + [
            _bundle(spec.cpus_per_worker, g) for _ in range(n - 1)
        ]
        dep["placement_group_strategy"] = spec.placement_strategy
    return dep


def serve_config(spec: ServeConfigInput) -> dict[str, Any]:
    """The Serve config (``ServeDeploySchema``) as a dict."""
    http: dict[str, Any] = {"host": "0.0.0.0", "port": spec.serve_port}
    if spec.request_timeout_s:
        http["request_timeout_s"] = spec.request_timeout_s
    app: dict[str, Any] = {
        "name": spec.app_name,
        "route_prefix": spec.route_prefix,
        "import_path": IMPORT_PATH,
        "args": spec.serve_args(),
        "deployments": [deployment_config(spec)],
    }
    # the replica settings of rayserve.spec.REPLICA_ENV, unless the spec's own env_vars say otherwise
    env = spec.runtime_env
    app["runtime_env"] = {**env, "env_vars": {**REPLICA_ENV, **env.get("env_vars", {})}}
    return {"proxy_location": "EveryNode", "http_options": http, "applications": [app]}


def build_serve_config(spec: ServeConfigInput) -> str:
    """``serveConfigV2`` for a RayService: the Serve config as a YAML string (deterministic:
    same input, same bytes)."""
    return yaml.safe_dump(serve_config(spec), sort_keys=False, default_flow_style=False)


def main(argv: list[str] | None = None) -> None:
    """``python -m rayserve.builder --name N --path P [...]``: print a serveConfigV2 (for demos
    and for ``serve run``/``serve deploy`` by hand)."""
    import argparse

    p = argparse.ArgumentParser(description="print the serveConfigV2 YAML for one model")
    p.add_argument("--name", required=True, help="served model name")
    p.add_argument("--path", required=True, help="model directory")
    p.add_argument("--max-context", type=int, default=4096)
    p.add_argument("--workers", type=int, default=1, help="pipeline workers per replica")
    p.add_argument("--gpus-per-worker", type=float, default=1)
    p.add_argument("--cpus-per-worker", type=float, default=1)
    p.add_argument("--min-replicas", type=int, default=1)
    p.add_argument("--max-replicas", type=int, default=1)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH[:STRENGTH]")
    a = p.parse_args(argv)
    adapters = []
    for item in a.adapter:
        name, _, rest = item.partition("=")
        path, _, strength = rest.partition(":")
        adapters.append(AdapterSpec(name=name, path=path, strength=float(strength or 1)))
    spec = ServeConfigInput(
        model=ModelSpec(name=a.name, path=a.path, max_context=a.max_context),
        adapters=adapters,
        workers_per_replica=a.workers,
        gpus_per_worker=a.gpus_per_worker,
        cpus_per_worker=a.cpus_per_worker,
        autoscaling=AutoscalingSpec(min_replicas=a.min_replicas, max_replicas=a.max_replicas),
        serve_port=a.port,
    )
    print(build_serve_config(spec), end="")


if __name__ == "__main__":
    main()
