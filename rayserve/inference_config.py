"""The runtime settings of one served model: ``inference.config``'s ``inference_config.yaml``.

Why here, in the data plane, and pure (no torch, no Ray, no Kubernetes): these are the serve app's
own knobs (the engine's batch and queue, the served context and dtype, Serve's autoscaling), so the
serve side owns their names, ranges and meaning; the controller imports this model to check a
Workspace's ConfigMap *before* it creates GPU nodes (a typo is a condition a person sees at once,
not a replica crash-looping on a paid GPU), and then hands the parsed settings to
``rayserve.builder`` through ``apply_inference_config``. One parser, so what the controller accepts
is what the replica runs.

The file is Kaito's: a ConfigMap with key ``inference_config.yaml``. Kaito's keys are accepted where
they mean something here, so Kaito's own ``inference-params-template`` applies unchanged:

- ``vllm:`` is a map of vLLM CLI flags. ``max-model-len`` (served context), ``max-num-seqs`` (the
  batch) and ``dtype`` map onto our settings (``VLLM_MAP``); flags that tune what vLLM has and
  this engine has not (``gpu-memory-utilization``: the estimator sizes the KV cache;
  ``cpu-offload-gb``, ...) are accepted and have no effect (``VLLM_NO_EFFECT``); so are
  ``enable-chunked-prefill`` and ``max-num-batched-tokens``: this engine always prefills long
  prompts in chunks, sized per row by our ``prefill_chunk_tokens``. Any other flag is refused, by
  name.
- ``kv_cache_cpu_memory_utilization`` and ``max_probe_steps`` (Kaito's CPU KV offload and context
  probing) have no counterpart here: accepted, no effect.
- Any other key is refused with the list of keys there are: a setting that silently did nothing
  is worse than a clear "no such key".

Our own keys (snake_case, like Kaito's top-level ones): ``max_batch_size``,
``max_waiting_requests``, ``max_queued_requests``, ``max_context``, ``dtype``,
``max_new_tokens_default``, ``prefill_chunk_tokens``, ``request_timeout_s`` and ``autoscaling``
(``min_replicas``, ``max_replicas``, ``initial_replicas``, ``target_ongoing_requests``,
``upscale_delay_s``, ``downscale_delay_s``). What a file leaves out keeps the serve app's default
or the estimate.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rayserve.builder import AutoscalingSpec, ServeConfigInput
from rayserve.spec import DType

CONFIG_KEY = "inference_config.yaml"  # Kaito's key in the ConfigMap

# vLLM flag -> our key; the value is validated as that key's
VLLM_MAP = {"max-model-len": "max_context", "max-num-seqs": "max_batch_size", "dtype": "dtype"}
# vLLM flags Kaito's template and users set that tune parts of vLLM this engine does not have
VLLM_NO_EFFECT = frozenset({
    "gpu-memory-utilization", "cpu-offload-gb", "max-seq-len-to-capture", "num-scheduler-steps",
    "enable-chunked-prefill", "enable-prefix-caching", "swap-space", "block-size", "enforce-eager",
    "max-num-batched-tokens", "seed", "disable-log-stats", "disable-log-requests",
    # the estimator lays a replica out over the GPUs (Kaito's own custom-config example sets this)
    "tensor-parallel-size", "pipeline-parallel-size",
})
KAITO_NO_EFFECT = ("kv_cache_cpu_memory_utilization", "max_probe_steps")


class InferenceConfigError(ValueError):
    """The file cannot be used: the message names the key and what is wrong with it."""


class AutoscalingBounds(BaseModel):
    """Serve's autoscaling within the nodes: what a file may set of ``builder.AutoscalingSpec``."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int | None = Field(None, ge=0)
    max_replicas: int | None = Field(None, ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    target_ongoing_requests: float | None = Field(None, gt=0)
    upscale_delay_s: float | None = Field(None, ge=0)
    downscale_delay_s: float | None = Field(None, ge=0)


class InferenceConfig(BaseModel):
    """``inference_config.yaml``, parsed (see the module docstring for the keys)."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int | None = Field(None, ge=1, description="sequences decoded together per step")
    max_waiting_requests: int | None = Field(None, ge=0, description="queued beyond the batch before 429")
    max_queued_requests: int | None = Field(None, ge=-1, description="Serve's queue before 503; -1 unbounded")
    max_context: int | None = Field(None, gt=0, description="prompt + generated tokens per request")
    dtype: DType | None = None
    max_new_tokens_default: int | None = Field(None, ge=1)
    prefill_chunk_tokens: int | None = Field(None, ge=16, description="prompt tokens per row a prefill "
                                             "forward takes (longer prompts: several steps)")
    request_timeout_s: float | None = Field(None, gt=0)
    autoscaling: AutoscalingBounds | None = None
    # Kaito's keys with no counterpart here (accepted so Kaito's template applies; no effect)
    kv_cache_cpu_memory_utilization: float | None = Field(None, ge=0, le=1)
    max_probe_steps: int | None = Field(None, ge=0)
    vllm: dict[str, Any] | None = Field(None, description="vLLM flags: mapped, accepted without effect, "
                                        "or refused (VLLM_MAP, VLLM_NO_EFFECT)")

    @model_validator(mode="before")
    @classmethod
    def _vllm_flags(cls, data: Any) -> Any:
        """Move the mapped vLLM flags onto our keys; refuse unknown flags and double settings."""
        if not isinstance(data, dict) or not isinstance(data.get("vllm"), dict):
            return data
        data = dict(data)
        for flag, value in data["vllm"].items():
            key = VLLM_MAP.get(str(flag))
            if key is None:
                if flag not in VLLM_NO_EFFECT:
                    known = ", ".join(sorted([*VLLM_MAP, *VLLM_NO_EFFECT]))
                    raise ValueError(f"vllm.{flag}: not a vLLM flag this runtime maps or accepts (it knows: "
                                     f"{known})")
                continue
            if data.get(key) is not None and data[key] != value:
                raise ValueError(f"vllm.{flag} ({value!r}) and {key} ({data[key]!r}) disagree: set one")
            data[key] = value
        return data

    def ignored(self) -> list[str]:
        """The keys given that have no effect here (for a log line or an Event)."""
        out = [k for k in KAITO_NO_EFFECT if getattr(self, k) is not None]
        return out + [f"vllm.{f}" for f in (self.vllm or {}) if f in VLLM_NO_EFFECT]


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            known = ", ".join(InferenceConfig.model_fields) if len(err["loc"]) == 1 else ", ".join(
                AutoscalingBounds.model_fields)
            parts.append(f"{where}: unknown key (known keys: {known})")
        else:
            parts.append(f"{where}: {err['msg']}".replace("Value error, ", ""))
    return "; ".join(parts)


def parse_inference_config(text: str) -> InferenceConfig:
    """Parse the file's text; raise InferenceConfigError with every problem named."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InferenceConfigError(f"not YAML: {exc}") from None
    if data is None:
        return InferenceConfig()
    if not isinstance(data, dict):
        raise InferenceConfigError(f"expected a mapping of settings, got {type(data).__name__}")
    try:
        return InferenceConfig.model_validate(data)
    except ValidationError as exc:
        raise InferenceConfigError(_describe(exc)) from None


def apply_inference_config(spec: ServeConfigInput, config: InferenceConfig,
                           max_replicas: int | None = None) -> ServeConfigInput:
    """``spec`` with the file's settings over it (the builder's own validation runs again).

    ``max_replicas``: how many replicas the nodes hold; a file asking for more is refused (the
    nodes are sized by the estimator, not by this file). Raises InferenceConfigError.
    """
    engine = {k: v for k, v in {
        "max_batch_size": config.max_batch_size, "max_waiting": config.max_waiting_requests,
        "max_new_tokens_default": config.max_new_tokens_default,
        "prefill_chunk_tokens": config.prefill_chunk_tokens}.items() if v is not None}
    model = {k: v for k, v in {"max_context": config.max_context, "dtype": config.dtype}.items()
             if v is not None}
    top: dict[str, Any] = {k: v for k, v in {
        "max_queued_requests": config.max_queued_requests,
        "request_timeout_s": config.request_timeout_s}.items() if v is not None}
    bounds = config.autoscaling.model_dump(exclude_none=True) if config.autoscaling else {}
    ceiling = max_replicas or spec.autoscaling.max_replicas
    asked = bounds.get("max_replicas", 0)
    if asked > ceiling:
        raise InferenceConfigError(f"autoscaling.max_replicas {asked} exceeds the {ceiling} replica(s) the "
                                   f"workspace's GPUs hold")
    autoscaling = spec.autoscaling.model_dump()
    autoscaling.update(bounds)
    if "min_replicas" in bounds and "initial_replicas" not in bounds:
        autoscaling["initial_replicas"] = bounds["min_replicas"]
    try:
        return ServeConfigInput.model_validate({
            **spec.model_dump(),
            **top,
            "model": {**spec.model.model_dump(), **model},
            "engine": {**spec.engine.model_dump(), **engine},
            "autoscaling": AutoscalingSpec.model_validate(autoscaling).model_dump(),
        })
    except ValidationError as exc:
        raise InferenceConfigError("; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}".replace("Value error, ", "")
            for e in exc.errors())) from None
