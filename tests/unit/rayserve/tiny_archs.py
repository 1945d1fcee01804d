"""Tiny random checkpoints of each architecture the catalog names, from transformers' own
config classes (the text part of a multimodal model: what our engine would serve).

Why transformers' config classes and not a hand-written config.json: the defaults (rope,
norms, sliding-window patterns, MoE routing) are the architecture's, so a tiny model
exercises the same code paths as the real one, only smaller.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

VOCAB = 96
COMMON: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
}


LOCAL_GLOBAL = ["sliding_attention", "full_attention"] * 2


def _cfg(cls_name: str, **overrides: Any):
    import transformers

    return getattr(transformers, cls_name)(**{**COMMON, **overrides})


# proof case -> (the architecture it proves, a tiny config of that class); variants of one
# architecture cover the shapes its presets use (Falcon-7B's multi-query vs Falcon-40B's grouped
# KV heads; Mistral with a sliding window, which the engine's attention mask must honour)
TINY_CONFIGS: dict[str, tuple[str, Callable[[], Any]]] = {
    "Phi3ForCausalLM": ("Phi3ForCausalLM", lambda: _cfg("Phi3Config", num_key_value_heads=4)),
    "LlamaForCausalLM": ("LlamaForCausalLM", lambda: _cfg("LlamaConfig")),
    "MistralForCausalLM": ("MistralForCausalLM", lambda: _cfg("MistralConfig", sliding_window=None)),
    "MistralForCausalLM-sliding": ("MistralForCausalLM", lambda: _cfg("MistralConfig", sliding_window=5)),
    "Qwen2ForCausalLM": ("Qwen2ForCausalLM", lambda: _cfg("Qwen2Config")),
    "Qwen3ForCausalLM": ("Qwen3ForCausalLM", lambda: _cfg("Qwen3Config", head_dim=8)),
    # Granite's real configs scale embeddings, residuals, attention and logits (granite-3: 12, 0.22,
    # 1/128, 16); the defaults are all 1, which would hide a stage that skipped them
    "GraniteForCausalLM": (
        "GraniteForCausalLM",
        lambda: _cfg(
            "GraniteConfig", embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=0.125,
            logits_scaling=16.0,
        ),
    ),
    "FalconForCausalLM": (
        "FalconForCausalLM",
        lambda: _cfg("FalconConfig", new_decoder_architecture=False, multi_query=True, num_key_value_heads=1),
    ),
    "FalconForCausalLM-40b": (
        "FalconForCausalLM",
        lambda: _cfg("FalconConfig", new_decoder_architecture=True, num_kv_heads=2),
    ),
    # local (windowed) and global layers in each of the 2 stages; their rotary bases differ
    "Gemma3ForCausalLM": (
        "Gemma3ForCausalLM",
        lambda: _cfg("Gemma3TextConfig", head_dim=8, sliding_window=4, layer_types=LOCAL_GLOBAL),
    ),
    "GptOssForCausalLM": (
        "GptOssForCausalLM",
        lambda: _cfg(
            "GptOssConfig", head_dim=8, num_local_experts=4, num_experts_per_tok=2, sliding_window=4,
            layer_types=LOCAL_GLOBAL,
        ),
    ),
    # Gemma 3's multimodal checkpoint (what google/gemma-3-4b-it ships): the engine serves its
    # text model; saved as transformers saves it (hub keys language_model.model.*)
    "Gemma3ForConditionalGeneration": ("Gemma3ForConditionalGeneration", lambda: _gemma3_multimodal()),
    # MLA + MoE; as in DeepSeek's config, KV heads = heads (transformers expands the latent to
    # every head, and a smaller count sends SDPA's decode path down a GQA packing that breaks)
    "DeepseekV3ForCausalLM": ("DeepseekV3ForCausalLM", lambda: _cfg(
        "DeepseekV3Config", n_routed_experts=4, num_experts_per_tok=2, n_group=1, topk_group=1,
        first_k_dense_replace=1, moe_intermediate_size=16, q_lora_rank=16, kv_lora_rank=16,
        qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8, head_dim=4, num_key_value_heads=4,
    )),
    # "-mxfp4": the experts stored as Kaito's gpt-oss checkpoints ship them (see to_mxfp4)
    "GptOssForCausalLM-mxfp4": (
        "GptOssForCausalLM",
        lambda: _cfg(
            "GptOssConfig", head_dim=8, num_local_experts=4, num_experts_per_tok=2, sliding_window=4,
            layer_types=LOCAL_GLOBAL,
        ),
    ),
    # Ministral 3's multimodal checkpoint around its Ministral3 text model; "-fp8": stored as
    # Kaito's Ministral 3 checkpoints are (block-wise FP8 weights + scales, see to_fp8)
    "Mistral3ForConditionalGeneration": ("Mistral3ForConditionalGeneration", lambda: _mistral3_multimodal()),
    "Mistral3ForConditionalGeneration-fp8": (
        "Mistral3ForConditionalGeneration", lambda: _mistral3_multimodal()
    ),
}


def _gemma3_multimodal():
    import transformers

    text = _cfg("Gemma3TextConfig", head_dim=8, sliding_window=4, layer_types=LOCAL_GLOBAL)
    vision = transformers.SiglipVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=16,
        patch_size=8,
    )
    return transformers.Gemma3Config(
        text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4,
        image_token_index=VOCAB - 1, boi_token_index=VOCAB - 2, eoi_token_index=VOCAB - 3,
    )


def _mistral3_multimodal():
    import transformers

    text = _cfg("Ministral3Config", head_dim=8)
    vision = transformers.PixtralVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, head_dim=8,
        image_size=16, patch_size=8,
    )
    return transformers.Mistral3Config(
        text_config=text.to_dict(), vision_config=vision.to_dict(), image_token_index=VOCAB - 1,
        tie_word_embeddings=False,
    )


FP8_BLOCK = 8


def to_fp8(path: Path) -> None:
    """Rewrite the checkpoint at ``path`` in transformers' fine-grained FP8 format (DeepSeek's and
    Mistral's): every projection weight as float8_e4m3fn in FP8_BLOCK x FP8_BLOCK blocks, each with
    its ``weight_scale_inv``, and ``quantization_config`` in config.json."""
    import json

    from safetensors.torch import load_file, save_file

    tensors = load_file(path / "model.safetensors")
    out: dict[str, torch.Tensor] = {}
    for key, w in tensors.items():
        if not (key.endswith("proj.weight") and w.dim() == 2 and all(n % FP8_BLOCK == 0 for n in w.shape)):
            out[key] = w
            continue
        rows, cols = w.shape
        blocks = w.reshape(rows // FP8_BLOCK, FP8_BLOCK, cols // FP8_BLOCK, FP8_BLOCK)
        scale = blocks.abs().amax(dim=(1, 3)).clamp(min=1e-12) / torch.finfo(torch.float8_e4m3fn).max
        out[key] = (blocks / scale[:, None, :, None]).reshape(rows, cols).to(torch.float8_e4m3fn)
        out[key.removesuffix("weight") + "weight_scale_inv"] = scale.float()
    save_file(out, path / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((path / "config.json").read_text())
    config["quantization_config"] = {
        "quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [FP8_BLOCK, FP8_BLOCK],
    }
    (path / "config.json").write_text(json.dumps(config))


MXFP4_BLOCK = 32  # values sharing one scale
# the 16 e2m1 (FP4) values in nibble order, as transformers.integrations.mxfp4.FP4_VALUES lists them
E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def mxfp4_pack(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``w`` ``[experts, rows, cols]`` in OCP MXFP4: per row, each group of 32 columns shares one
    e8m0 scale (a power of two, stored as exponent + 127) and every value becomes the nearest
    e2m1 code, two codes a byte (the even column in the low nibble). Returns blocks ``[experts,
    rows, cols / 32, 16]`` (uint8) and scales ``[experts, rows, cols / 32]`` (uint8), the shapes
    transformers' ``Mxfp4Dequantize`` reads."""
    experts, rows, cols = w.shape
    groups = w.float().reshape(experts, rows, cols // MXFP4_BLOCK, MXFP4_BLOCK)
    amax = groups.abs().amax(dim=-1, keepdim=True).clamp(min=2.0**-126)
    exponent = torch.ceil(torch.log2(amax / 6.0))  # the largest value maps to at most 6
    scaled = groups / torch.exp2(exponent)
    codes = (scaled[..., None] - torch.tensor(E2M1)).abs().argmin(dim=-1).to(torch.uint8)
    packed = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return packed, (exponent[..., 0] + 127).to(torch.uint8)


def to_mxfp4(path: Path) -> None:
    """Rewrite the tiny GptOss checkpoint at ``path`` as openai/gpt-oss-* ship it: every layer's
    ``mlp.experts.{gate_up_proj,down_proj}`` as ``*_blocks`` + ``*_scales`` (``mxfp4_pack`` of the
    weight as ``[experts, out, in]``: transformers' GptOss keeps it ``[experts, in, out]``),
    biases, attention, router, embeddings and head unquantized, and the checkpoint's
    ``quantization_config`` in config.json."""
    import json

    from safetensors.torch import load_file, save_file

    tensors = load_file(path / "model.safetensors")
    out: dict[str, torch.Tensor] = {}
    for key, w in tensors.items():
        if key.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
            out[f"{key}_blocks"], out[f"{key}_scales"] = mxfp4_pack(w.transpose(1, 2))
        else:
            out[key] = w
    save_file(out, path / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((path / "config.json").read_text())
    config["quantization_config"] = {
        "quant_method": "mxfp4",
        "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                   "model.embed_tokens", "lm_head"],
    }
    (path / "config.json").write_text(json.dumps(config))


def build_tiny(arch: str, path: Path) -> Path:
    """Save the random checkpoint of proof case ``arch`` (config + safetensors, seed 0) at ``path``."""
    from rayserve.loading import auto_class

    torch.manual_seed(0)
    config = TINY_CONFIGS[arch][1]()
    model = auto_class(config).from_config(config, dtype=torch.float32)
    model.save_pretrained(path)
    if arch.endswith("-fp8"):
        to_fp8(path)
    if arch.endswith("-mxfp4"):
        to_mxfp4(path)
    return path
