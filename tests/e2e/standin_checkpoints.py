"""Tiny stand-in checkpoints a local hub can serve under a real model's id, cached on disk.

Why not ``tiny_archs.build_tiny`` as it is: a Workspace is answered over ``/chat``, in text, so the
serve replica needs a tokenizer, which the architecture proofs (token ids in, token ids out) do not
ship. A stand-in is the proof case's own config (transformers' config class of the architecture,
4 layers, hidden 32: ``tests/unit/rayserve/tiny_archs.py``) with its vocabulary and special-token
ids fitted to hack/tiny_model.py's byte-level BPE tokenizer, saved with that tokenizer (and, for an
``-fp8`` case, rewritten as block-wise FP8 as the proof case is). Everything else about the
architecture (rope, windows, MoE, MLA, multimodal wrapping) stays the proof case's.

Built once per config: the directory name carries a digest of the fitted config, the tokenizer and
this module's ``VERSION``, so a changed proof config is rebuilt and an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from hack.tiny_model import DEFAULT_DIR, ensure_tiny_model

CACHE = DEFAULT_DIR.parent / "standins"
VERSION = 1  # bump when the way a stand-in is built changes
_MARKER = ".standin.json"
_TOKEN_ATTRS = ("bos_token_id", "eos_token_id", "pad_token_id")


def _tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ensure_tiny_model())


def fitted_config(case: str, tokenizer):
    """The proof case's config with the tokenizer's vocabulary size and its end-of-text token as
    bos, eos and pad (in the text model's config and, for a multimodal one, the outer config)."""
    from tests.unit.rayserve.tiny_archs import TINY_CONFIGS

    config = TINY_CONFIGS[case][1]()
    eos = int(tokenizer.eos_token_id)
    for cfg in {id(c): c for c in (config, config.get_text_config())}.values():
        if hasattr(cfg, "vocab_size"):
            cfg.vocab_size = len(tokenizer)
        for attr in _TOKEN_ATTRS:
            if getattr(cfg, attr, None) is not None:
                setattr(cfg, attr, eos)
    return config


def _digest(case: str, config, tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    text = json.dumps({"case": case, "version": VERSION, "config": config.to_dict(), "vocab": vocab},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def standin_checkpoint(case: str, cache: Path = CACHE) -> Path:
    """The directory of proof case ``case``'s stand-in (config, safetensors, tokenizer), built if
    missing. Concurrent callers each write a private temp dir; the first complete rename wins."""
    import torch

    from rayserve.loading import auto_class
    from tests.unit.rayserve.tiny_archs import to_fp8, to_mxfp4

    tokenizer = _tokenizer()
    config = fitted_config(case, tokenizer)
    path = cache / f"{case}-{_digest(case, config, tokenizer)}"
    if (path / _MARKER).is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=cache))
    try:
        torch.manual_seed(0)
        model = auto_class(config).from_config(config, dtype=torch.float32)
        model.save_pretrained(tmp)
        if case.endswith("-fp8"):
            to_fp8(tmp)
        elif case.endswith("-mxfp4"):  # gpt-oss's experts as Kaito's checkpoints ship them
            to_mxfp4(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARKER).write_text(json.dumps({"case": case, "version": VERSION}))
        if not (path / _MARKER).is_file():
            shutil.rmtree(path, ignore_errors=True)  # a half-written leftover
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def greedy_text(path: Path, prompt: str, max_new_tokens: int) -> tuple[str, int]:
    """What ``generate`` answers to a Kaito ``/chat`` prompt (greedy, float32 on CPU), and how many
    tokens it generated: the prompt encoded and the output decoded as the serve replica does
    (``rayserve.text``), stopping at the ids the replica stops at (``eos_token_ids``)."""
    import torch

    from rayserve.loading import eos_token_ids, load_config, load_model, load_tokenizer
    from rayserve.spec import ModelSpec
    from rayserve.text import encode

    spec = ModelSpec(name=path.name, path=str(path), dtype="float32")
    tokenizer = load_tokenizer(spec)
    config, gen = load_config(spec)
    stops = eos_token_ids(config, gen, tokenizer)
    model = load_model(spec, torch.device("cpu"))
    ids = torch.tensor([encode(tokenizer, prompt, chat=False)])
    with torch.inference_mode():
        out = model.generate(
            ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=sorted(stops),
            pad_token_id=tokenizer.pad_token_id,
        )
    new = out[0, ids.shape[1] :].tolist()
    if new and new[-1] in stops:
        new = new[:-1]
    return tokenizer.decode(new, skip_special_tokens=True), len(new)
