"""``inference_config.yaml``: Kaito's file applies, our keys reach the serve config, the rest is refused."""

from __future__ import annotations

import pytest
import yaml

from rayserve.builder import AutoscalingSpec, ServeConfigInput, serve_config
from rayserve.inference_config import (
    InferenceConfigError,
    apply_inference_config,
    parse_inference_config,
)
from rayserve.spec import ModelSpec

# Kaito v0.12's default ConfigMap (charts/kaito/workspace/templates/inference-params.yaml), unchanged
KAITO_TEMPLATE = """\
# Optional: CPU memory utilization for the vllm engine in kv cache offload mode.
kv_cache_cpu_memory_utilization: 0.5

vllm:
  cpu-offload-gb: 0

  # gpu-memory-utilization: 0.9
  # max-model-len: 2048
"""


def _spec(max_replicas: int = 4) -> ServeConfigInput:
    scaling = AutoscalingSpec(min_replicas=1, initial_replicas=1, max_replicas=max_replicas)
    return ServeConfigInput(model=ModelSpec(name="phi", path="/m"), autoscaling=scaling)


def test_kaitos_template_applies_unchanged_and_changes_nothing() -> None:
    config = parse_inference_config(KAITO_TEMPLATE)
    assert config.ignored() == ["kv_cache_cpu_memory_utilization", "vllm.cpu-offload-gb"]
    assert apply_inference_config(_spec(), config) == _spec()
    assert parse_inference_config("") == parse_inference_config("# only comments\n")


def test_vllm_flags_map_onto_our_keys() -> None:
    config = parse_inference_config("vllm:\n  max-model-len: 2048\n  max-num-seqs: 4\n  dtype: float16\n")
    assert (config.max_context, config.max_batch_size, config.dtype) == (2048, 4, "float16")
    with pytest.raises(InferenceConfigError, match=r"vllm.max-num-seqs \(4\) and max_batch_size \(8\) disag"):
        parse_inference_config("max_batch_size: 8\nvllm:\n  max-num-seqs: 4\n")


@pytest.mark.parametrize(("text", "message"), [
    ("max_batch_szie: 8\n", "max_batch_szie: unknown key (known keys: max_batch_size, "),
    ("autoscaling:\n  max_replica: 2\n", "autoscaling.max_replica: unknown key (known keys: min_replicas"),
    ("vllm:\n  enable-lora: true\n", "vllm.enable-lora: not a vLLM flag this runtime maps"),
    ("max_batch_size: 0\n", "max_batch_size: Input should be greater than or equal to 1"),
    ("dtype: float8\n", "dtype: Input should be 'auto', 'float32', 'float16' or 'bfloat16'"),
    ("- a list\n", "expected a mapping of settings, got list"),
    ("max_batch_size: [\n", "not YAML"),
])
def test_problems_are_named(text: str, message: str) -> None:
    with pytest.raises(InferenceConfigError) as exc:
        parse_inference_config(text)
    assert message in str(exc.value)


def test_settings_reach_the_serve_config() -> None:
    config = parse_inference_config(yaml.safe_dump({
        "max_batch_size": 4, "max_waiting_requests": 8, "max_queued_requests": 16, "max_context": 1024,
        "dtype": "float16", "max_new_tokens_default": 64, "request_timeout_s": 30,
        "prefill_chunk_tokens": 256,
        "autoscaling": {"min_replicas": 2, "max_replicas": 3, "target_ongoing_requests": 2},
    }))
    cfg = serve_config(apply_inference_config(_spec(), config))
    app = cfg["applications"][0]
    dep = app["deployments"][0]
    assert app["args"]["engine"]["max_batch_size"] == 4 and app["args"]["engine"]["max_waiting"] == 8
    assert app["args"]["engine"]["max_new_tokens_default"] == 64
    assert app["args"]["engine"]["prefill_chunk_tokens"] == 256
    assert app["args"]["model"]["max_context"] == 1024 and app["args"]["model"]["dtype"] == "float16"
    assert dep["max_ongoing_requests"] == 4 + 8 + 1 and dep["max_queued_requests"] == 16
    scaling = dep["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["initial_replicas"], scaling["max_replicas"]) == (2, 2, 3)
    assert scaling["target_ongoing_requests"] == 2
    assert cfg["http_options"]["request_timeout_s"] == 30


def test_bounds_the_nodes_cannot_hold_and_incoherent_settings_are_refused() -> None:
    with pytest.raises(InferenceConfigError, match="max_replicas 5 exceeds the 4 replica"):
        apply_inference_config(_spec(), parse_inference_config("autoscaling:\n  max_replicas: 5\n"))
    # the default autoscaling target (8 ongoing) does not fit a batch of 2 with no queue
    small = parse_inference_config("max_batch_size: 2\nmax_waiting_requests: 0\n")
    with pytest.raises(InferenceConfigError, match=r"8\.0 exceeds max_ongoing_requests 3"):
        apply_inference_config(_spec(), small)
