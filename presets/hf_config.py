"""A preset for a model the catalog does not list, derived from its ``config.json`` and the
safetensors headers of its checkpoint.

Why derived, not guessed: the estimator needs the same facts for any model (parameters and their
dtype for the weights' size; layers x KV heads x head_dim for the KV cache; the context; the head
counts that a tensor-parallel split must divide), and a checkpoint states all of them. The catalog
entries for Kaito v0.12's models were derived by nearly the same rule (presets/catalog.yaml's header):
``disk_gib = weights + 80``, and ``gpu_memory_gib = weights x 1.1 +`` room for the KV cache, here the
cache of one context of at most DEFAULT_KV_TOKENS tokens, which the config states exactly (the
catalog's "+ 1 GiB" stands in for it where no one computed it; for a tiny test checkpoint it would
be a thousand times the weights).

Pure: the caller reads the files (controller/workspace/hf_hub.py); this module only reads dicts.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

from presets.estimator import kv_bytes_per_token
from presets.registry import Catalog, Experts, Preset

# safetensors header dtypes -> bytes per value
SAFETENSORS_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1, "F4": 0.5, "F6_E2M3": 0.75,
    "F6_E3M2": 0.75,
}
_COMPUTE_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}
DEFAULT_KV_TOKENS = 4096  # the KV cache one replica is sized for (the estimator caps the context)
DEFAULT_CONTEXT = 2048  # what transformers assumes for configs without max_position_embeddings (Falcon)
GIB = 1 << 30


class ModelConfigError(ValueError):
    """The checkpoint cannot be sized or served: ``reason`` is a condition reason, the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# a Hugging Face model id (``org/name``): what the webhook admits for a model the catalog lacks
HF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def looks_like_hf_id(name: str) -> bool:
    return bool(HF_ID.match(name)) and ".." not in name and not name.endswith((".", "-"))


REASON_ARCHITECTURE_NOT_SUPPORTED = "ModelArchitectureNotSupported"
REASON_CONFIG_INVALID = "ModelConfigInvalid"


@dataclass(frozen=True)
class Weights:
    """What the safetensors headers say: parameters per header dtype."""

    params_by_dtype: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_headers(cls, headers: list[dict]) -> Weights:
        """From the JSON headers of every safetensors file of the checkpoint."""
        counts: Counter[str] = Counter()
        for header in headers:
            for name, tensor in header.items():
                if name == "__metadata__":
                    continue
                counts[tensor["dtype"]] += math.prod(tensor["shape"])
        return cls(dict(counts))

    @property
    def params(self) -> int:
        return sum(self.params_by_dtype.values())

    @property
    def bytes(self) -> int:
        return int(sum(n * SAFETENSORS_BYTES.get(d, 2) for d, n in self.params_by_dtype.items()))

    @property
    def main_dtype(self) -> str | None:
        """The header dtype that holds most parameters."""
        counts = self.params_by_dtype
        return max(counts, key=counts.__getitem__) if counts else None


def _first(config: dict, *keys: str) -> object | None:
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return None


def _int(config: dict, *keys: str, required: bool = True) -> int | None:
    value = _first(config, *keys)
    if value is None:
        if required:
            raise ModelConfigError(REASON_CONFIG_INVALID, f"config.json has none of {', '.join(keys)}")
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ModelConfigError(REASON_CONFIG_INVALID, f"config.json's {keys[0]} is {value!r}, not a count")
    return value


def compute_dtype(config: dict, weights: Weights) -> str:
    """The dtype the model computes in: config.json's ``dtype`` (``torch_dtype`` before transformers
    5), else that of most of its weights, else bfloat16."""
    named = _first(config, "dtype", "torch_dtype")
    if named in ("float16", "bfloat16", "float32"):
        return str(named)
    return _COMPUTE_DTYPES.get(weights.main_dtype or "", "bfloat16")


def quantization(config: dict) -> str | None:
    quant = config.get("quantization_config") or {}
    method = quant.get("quant_method") if isinstance(quant, dict) else None
    if method is None:
        return None
    return str(method).lower()


def preset_from_config(model_id: str, config: dict, weights: Weights, catalog: Catalog,
                       *, gated: bool = False) -> Preset:
    """The preset of ``model_id``: its architecture must be one the engine serves (the catalog's
    ``architectures`` table: proven ones only); the rest is read from the config and the weights.

    Raises ModelConfigError (``reason`` for the condition) when it cannot be served or sized."""
    archs = config.get("architectures") or []
    arch_name = archs[0] if archs and isinstance(archs[0], str) else None
    supported = ", ".join(catalog.supported_architectures())
    arch = catalog.architecture(arch_name) if arch_name else None
    if arch is None or not arch.supported:
        why = f" ({arch.why})" if arch is not None and arch.why else ""
        what = f"a {arch_name} model" if arch_name else "a model without architectures in config.json"
        raise ModelConfigError(
            REASON_ARCHITECTURE_NOT_SUPPORTED,
            f"{model_id} is {what}, which this operator's engine cannot serve{why}. "
            f"Architectures it serves: {supported}",
        )
    quant = quantization(config)
    if quant is not None and quant not in catalog.quantizations:
        raise ModelConfigError(REASON_CONFIG_INVALID, f"{model_id} ships {quant} weights, a format this "
                               "operator does not know; pick a checkpoint with unquantized weights")
    if weights.params <= 0:
        raise ModelConfigError(REASON_CONFIG_INVALID,
                               f"{model_id} has no safetensors weights (model.safetensors or its index)")
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else None
    shape = {**config, **(text or {})}  # a multimodal checkpoint's text model has the decoder's shape
    layers = _int(shape, "num_hidden_layers", "n_layer", "num_layers")
    heads = _int(shape, "num_attention_heads", "n_head")
    assert layers is not None and heads is not None
    kv_heads = _int(shape, "num_key_value_heads", "num_kv_heads", required=False)
    if kv_heads is None:
        kv_heads = 1 if shape.get("multi_query") else heads
    hidden = _int(shape, "hidden_size", "n_embd", "d_model", required=False)
    head_dim = _int(shape, "head_dim", required=False) or (hidden // heads if hidden else None)
    kv_lora = _int(shape, "kv_lora_rank", required=False)
    if kv_lora is not None and (qk := _int(shape, "qk_nope_head_dim", required=False)):
        head_dim = qk + (_int(shape, "qk_rope_head_dim", required=False) or 0)
    total_experts = _int(shape, "num_local_experts", "n_routed_experts", "num_experts", required=False)
    active = _int(shape, "num_experts_per_tok", required=False)
    weights_gib = weights.bytes / GIB
    preset = Preset(
        name=model_id,
        hf_model_id=model_id,
        params_b=weights.params / 1e9,
        weights_gib=weights_gib,
        gpu_memory_gib=weights_gib * 1.1 or 0.0001,  # + the KV cache, below
        disk_gib=math.ceil(weights_gib) + 80,
        max_context=_int(shape, "max_position_embeddings", "n_positions", "seq_length", required=False)
        or DEFAULT_CONTEXT,
        dtype=compute_dtype(shape, weights),  # type: ignore[arg-type]
        architecture=arch.name,
        num_layers=layers,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        quantization=quant,  # type: ignore[arg-type]
        kv_lora_rank=kv_lora,
        qk_rope_head_dim=_int(shape, "qk_rope_head_dim", required=False) if kv_lora else None,
        sliding_window=_int(shape, "sliding_window", required=False),
        experts=Experts(total=total_experts, active=active or 1) if total_experts else None,
        hf_auth_required=gated,
    )
    per_token = kv_bytes_per_token(preset, preset.dtype) or 0
    kv_gib = per_token * min(preset.max_context, DEFAULT_KV_TOKENS) / GIB
    return preset.model_copy(update={"gpu_memory_gib": round(weights_gib * 1.1 + kv_gib, 4) or 0.0001})
