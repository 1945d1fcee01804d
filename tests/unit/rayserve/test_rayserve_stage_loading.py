"""rayserve.loading.load_stage_model: a pipeline stage reads only its share of the checkpoint,
and what it holds is exactly what the full load + prune held (weights, buffers, adapters,
logits of the chained stages)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from hack.tiny_model import ensure_tiny_model
from rayserve.adapters import BASE
from rayserve.loading import load_model, load_stage_model
from rayserve.spec import AdapterSpec, ModelSpec
from rayserve.stage import PipelineStage, StageInput, meta_tensors, split_layers

CPU = torch.device("cpu")
LAYERS = 4  # the default tiny model's


@pytest.fixture(scope="module")
def tiny() -> Path:
    return ensure_tiny_model()


def _spec(path: Path, **kw) -> ModelSpec:
    return ModelSpec(name="tiny", path=str(path), **kw)


def _stage(spec: ModelSpec, start: int, end: int, adapters=()) -> PipelineStage:
    return PipelineStage(load_stage_model(spec, start, end, CPU, adapters), start, end, CPU, prune=True)


def _old_stage(spec: ModelSpec, start: int, end: int, adapters=()) -> PipelineStage:
    """The path this replaces: the whole checkpoint, then prune."""
    return PipelineStage(load_model(spec, CPU, adapters, move=False), start, end, CPU, prune=True)


def _owned(name: str, start: int, end: int) -> bool:
    """Independent of ``dropped_prefixes``: which full-model tensors stage [start, end) holds."""
    if name.startswith("model.layers."):
        return start <= int(name.split(".")[2]) < end
    if name.startswith("model.embed_tokens."):
        return start == 0
    return end == LAYERS  # model.norm, lm_head


def _chained_logits(stages: list[PipelineStage], ids: torch.Tensor, **kw) -> torch.Tensor:
    """Run ``ids`` (a prefill, no padding) through ``stages`` in order, as the pipeline does."""
    kw.setdefault("last_only", False)
    inp = StageInput(
        mask=torch.ones_like(ids, dtype=torch.bool),
        positions=torch.arange(ids.shape[1]).expand_as(ids),
        cache_key="t",
        **kw,
    )
    x = ids
    for stage in stages:
        x = stage.forward(x, inp)
        stage.drop("t")  # the next call is a fresh prefill
    return x


def _assert_same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("stages", [2, 4])
def test_stage_holds_only_its_layers_with_the_full_loads_values(tiny, stages):
    full = load_model(_spec(tiny))
    full_params = dict(full.named_parameters())
    for start, end in split_layers(LAYERS, stages):
        model = load_stage_model(_spec(tiny), start, end, CPU)
        # before pruning: what the stage does not own was never read (no data, on meta)
        assert set(meta_tensors(model)) == {n for n in full_params if not _owned(n, start, end)}
        stage = PipelineStage(model, start, end, CPU, prune=True)
        got = dict(stage.model.named_parameters())
        # pruned positions 0..k-1 are the full model's layers start..end-1
        renamed = {_full_name(n, start): p for n, p in got.items()}
        assert set(renamed) == {n for n in full_params if _owned(n, start, end)}
        for name, p in renamed.items():
            assert torch.equal(p, full_params[name]), name
        assert [layer.self_attn.layer_idx for layer in stage.layers] == list(range(start, end))
        assert torch.equal(stage.rotary.inv_freq, full.model.rotary_emb.inv_freq)


def _full_name(name: str, start: int) -> str:
    parts = name.split(".")
    if name.startswith("model.layers."):
        parts[2] = str(int(parts[2]) + start)
    return ".".join(parts)


@pytest.mark.parametrize("stages", [1, 2, 4])
def test_chained_stages_give_the_full_models_logits(tiny, stages):
    ids = torch.tensor([[5, 17, 42, 99, 3, 250], [7, 7, 300, 1, 64, 128]])
    with torch.inference_mode():
        expected = load_model(_spec(tiny))(ids).logits.float()
    got = _chained_logits([_stage(_spec(tiny), a, b) for a, b in split_layers(LAYERS, stages)], ids)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_dtype_follows_the_spec_like_the_full_load(tiny):
    spec = _spec(tiny, dtype="bfloat16")
    new, old = _stage(spec, 1, 3), _old_stage(spec, 1, 3)
    assert new.dtype == torch.bfloat16
    _assert_same_tensors(new.model, old.model)
    assert new.rotary.inv_freq.dtype == old.rotary.inv_freq.dtype == torch.float32


def test_sharded_checkpoint_reads_through_its_index(tiny, tmp_path):
    full = load_model(_spec(tiny))
    full.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("*.safetensors"))) > 2
    for start, end in split_layers(LAYERS, 2):
        new, old = _stage(_spec(tmp_path), start, end), _old_stage(_spec(tiny), start, end)
        _assert_same_tensors(new.model, old.model)


def test_tied_embeddings_reach_the_last_stage(tiny, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(tiny)
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    spec = _spec(tmp_path)
    full = load_model(spec)
    assert full.lm_head.weight is full.model.embed_tokens.weight

    last = _stage(spec, 2, 4)
    assert last.embed is None and torch.equal(last.lm_head.weight, full.model.embed_tokens.weight)
    whole = _stage(spec, 0, 4)
    assert whole.lm_head.weight is whole.embed.weight  # held once, as in the full load

    ids = torch.tensor([[3, 30, 300, 33]])
    with torch.inference_mode():
        expected = full(ids).logits.float()
    stages = [_stage(spec, a, b) for a, b in split_layers(LAYERS, 2)]
    torch.testing.assert_close(_chained_logits(stages, ids), expected, rtol=1e-5, atol=1e-5)


def test_a_missing_tensor_fails_naming_it(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    _copy_checkpoint(tiny, tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["model.layers.1.mlp.down_proj.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})

    with pytest.raises(KeyError, match=r"model\.layers\.1\.mlp\.down_proj\.weight"):
        load_stage_model(_spec(tmp_path), 0, 2, CPU)
    _stage(_spec(tmp_path), 2, 4)  # a stage that does not need it loads


def test_checkpoint_without_safetensors_falls_back_to_the_full_load(tiny, tmp_path, caplog):
    _copy_checkpoint(tiny, tmp_path)
    state = load_model(_spec(tiny)).state_dict()
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")

    with caplog.at_level(logging.WARNING, logger="rayserve.loading"):
        stage = _stage(_spec(tmp_path), 2, 4)
    assert "no safetensors" in caplog.text
    _assert_same_tensors(stage.model, _old_stage(_spec(tiny), 2, 4).model)


def test_adapters_on_a_partial_stage_match_the_full_load(tiny, tmp_path):
    """peft attaches to the same full-length model (other layers on meta), before pruning,
    so adapter keys need no remapping and each stage gets its layers' LoRA weights."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=4, target_modules=["qkv_proj", "o_proj"], init_lora_weights=False)
    torch.manual_seed(1)
    get_peft_model(load_model(_spec(tiny)), lora).save_pretrained(tmp_path)
    adapters = [AdapterSpec(name="a", path=str(tmp_path), strength=0.5)]

    ids = torch.tensor([[5, 17, 42, 99]])
    stages = []
    for start, end in split_layers(LAYERS, 2):
        new, old = _stage(_spec(tiny), start, end, adapters), _old_stage(_spec(tiny), start, end, adapters)
        _assert_same_tensors(new.model, old.model)
        assert any("lora_A" in k for k in new.model.state_dict())
        stages.append(new)
    full = PipelineStage(load_model(_spec(tiny), CPU, adapters), 0, LAYERS, CPU)
    expected = _chained_logits([full], ids, adapter_names=["a"])
    torch.testing.assert_close(
        _chained_logits(stages, ids, adapter_names=["a"]), expected, rtol=1e-5, atol=1e-5
    )
    assert not torch.equal(expected, _chained_logits([full], ids, adapter_names=[BASE]))  # the adapter acts


def _copy_checkpoint(src: Path, dst: Path) -> None:
    for f in src.iterdir():
        if f.is_file():
            (dst / f.name).write_bytes(f.read_bytes())


def test_a_hub_checkpoint_downloads_only_the_files_its_index_names(monkeypatch, tmp_path) -> None:
    """A repo may carry another copy of the weights (Mistral's consolidated.safetensors): only the
    files the index's weight_map names (plus the json files) are fetched. No network: the hub
    client's two calls are replaced."""
    import json

    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    from rayserve import loading

    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                                "b": "model-00002-of-00002.safetensors",
                                                "c": "model-00001-of-00002.safetensors"}}))
    asked: list[list[str]] = []
    revisions: list[str | None] = []  # both calls get the preset's pinned commit

    def snapshot(repo: str, revision: str | None, allow_patterns: list[str]) -> str:
        asked.append(allow_patterns)
        revisions.append(revision)
        return str(tmp_path)

    def download(repo: str, name: str, revision: str | None) -> str:
        revisions.append(revision)
        return str(index)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    sha = "e0bc86c23ce5aae1db576c8cca6f06f1f73af2db"
    assert loading._checkpoint_dir("mistralai/Mistral-7B-Instruct-v0.3", sha) == tmp_path
    assert asked[-1] == ["*.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert revisions == [sha, sha]

    def no_index(repo: str, name: str, revision: str | None) -> str:
        raise EntryNotFoundError(f"{name} not in {repo}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_index)
    loading._checkpoint_dir("microsoft/Phi-3-mini-4k-instruct")
    assert asked[-1] == ["*.json", "model.safetensors"]
