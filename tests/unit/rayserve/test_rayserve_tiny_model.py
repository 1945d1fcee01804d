"""hack/tiny_model.py: a real from_pretrained-loadable Phi-3 checkpoint, made once."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hack.tiny_model import TinyModelParams, ensure_tiny_model, is_complete

SMALL = TinyModelParams(hidden=32, layers=2, heads=2, intermediate=64, vocab=300, max_positions=128)


def test_checkpoint_loads_and_is_reused(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = ensure_tiny_model(tmp_path / "m", SMALL)
    assert is_complete(path, SMALL) and not is_complete(path, TinyModelParams())
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_model(path, SMALL) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # idempotent: not rewritten

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "phi3" and model.config.num_hidden_layers == 2
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert text == "<|user|>\nhi<|end|>\n<|assistant|>\n"
    assert tok.decode(tok("héllo wörld {1}")["input_ids"]) == "héllo wörld {1}"  # byte-level: no UNK


def test_build_app_rejects_bad_args_before_any_replica_starts():
    from rayserve.app import build_app

    with pytest.raises(ValidationError, match="path"):
        build_app({"model": {"name": "x"}})
