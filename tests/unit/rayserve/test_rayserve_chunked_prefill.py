"""Chunked prefill changes when prompt columns are computed, not what is generated: on the real
tiny model, prompts of 5 to 40 tokens prefilled 7 columns at a time, with rows joining and
leaving the batch, give the greedy tokens of whole-prompt prefill."""

from __future__ import annotations

import asyncio

import pytest
import torch

import rayserve.engine as engine_module
from hack.tiny_model import ensure_tiny_model
from hack.tp_local import generate
from rayserve.loading import load_model
from rayserve.pipeline import LocalPipeline
from rayserve.spec import ModelSpec
from rayserve.stage import PipelineStage

PROMPTS = [list(range(5, 5 + n)) for n in (5, 40, 17, 29)]
LENGTHS = [12, 6, 9, 14]


def _pipeline() -> LocalPipeline:
    """A fresh one per run: a stage's caches outlive the engine that filled them."""
    cpu = torch.device("cpu")
    model = load_model(ModelSpec(name="tiny", path=str(ensure_tiny_model())), cpu)
    return LocalPipeline([PipelineStage(model, 0, model.config.num_hidden_layers, cpu)])


def _tokens(monkeypatch: pytest.MonkeyPatch, chunk: int | None) -> list[list[int]]:
    real = engine_module.Engine.__init__

    def with_chunk(self, *args, **kwargs):
        real(self, *args, **{**kwargs, "prefill_chunk": chunk})

    with monkeypatch.context() as m:
        m.setattr(engine_module.Engine, "__init__", with_chunk)  # generate() builds its own Engine
        return asyncio.run(generate(_pipeline(), PROMPTS, LENGTHS, batch=2))


def test_chunked_prefill_generates_what_whole_prefill_does(monkeypatch):
    whole = _tokens(monkeypatch, None)
    assert [len(t) for t in whole] == LENGTHS
    assert _tokens(monkeypatch, 7) == whole
    assert _tokens(monkeypatch, 1) == whole  # one column per step: every prompt token its own forward
