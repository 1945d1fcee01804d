"""Load a causal LM, its tokenizer and LoRA adapters from a ``ModelSpec``.

Why one place: every process that holds weights (the Serve replica when unsharded, each
pipeline-stage actor when sharded, the tuning job, the benchmark's baseline) must load the
same way - same dtype rule, same attention implementation, same adapter scaling - or the
sharded output stops matching the unsharded one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from rayserve.spec import AdapterSpec, ModelSpec

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def pick_device(gpus: float | None = None) -> torch.device:
    """CUDA when this process was given a GPU (or any is visible and ``gpus`` is None)."""
    if torch.cuda.is_available() and (gpus is None or gpus > 0):
        return torch.device("cuda", 0)
    return torch.device("cpu")


def resolve_dtype(spec: ModelSpec, device: torch.device) -> torch.dtype:
    """'auto' is bfloat16 on GPU (Phi-3's training dtype) and float32 on CPU (fast, exact)."""
    if spec.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[spec.dtype]


def load_tokenizer(spec: ModelSpec):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec.path, trust_remote_code=spec.trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    spec: ModelSpec,
    device: torch.device | None = None,
    adapters: Sequence[AdapterSpec] = (),
    move: bool = True,
):
    """Return the causal LM in eval mode, in the dtype meant for ``device``, with ``adapters``
    injected (not merged).

    ``move=False`` leaves the weights on CPU so a pipeline stage can drop the layers it does
    not own before moving the rest onto its GPU. With adapters, the returned module is the
    base model whose linear layers peft wrapped; rows of a batch choose their adapter at
    forward time (see ``rayserve.adapters``).
    """
    from transformers import AutoModelForCausalLM

    device = device or pick_device()
    dtype = resolve_dtype(spec, device)
    model = AutoModelForCausalLM.from_pretrained(
        spec.path,
        dtype=dtype,
        attn_implementation=spec.attn_implementation,
        trust_remote_code=spec.trust_remote_code,
    )
    if adapters:
        from rayserve.adapters import attach_adapters

        model = attach_adapters(model, adapters)
    if move:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


def load_config(spec: ModelSpec):
    """The model's config and generation config (None when absent), without the weights."""
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(spec.path, trust_remote_code=spec.trust_remote_code)
    try:
        gen = GenerationConfig.from_pretrained(spec.path)
    except OSError:
        gen = None
    return config, gen


def eos_token_ids(config, generation_config, tokenizer) -> set[int]:
    """All ids that end a generation: generation_config's (Phi-3 lists <|end|> too), the
    config's and the tokenizer's."""
    ids: set[int] = set()
    for src in (generation_config, config):
        eos = getattr(src, "eos_token_id", None) if src is not None else None
        if isinstance(eos, int):
            ids.add(eos)
        elif eos:
            ids.update(int(e) for e in eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def context_limit(spec: ModelSpec, config) -> int:
    """The smaller of what the spec allows and what the model's positions support."""
    limit = spec.max_context
    max_pos = getattr(config, "max_position_embeddings", None)
    return min(limit, max_pos) if max_pos else limit
