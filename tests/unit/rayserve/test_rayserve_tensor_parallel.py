"""Tensor parallelism on CPU with gloo: two real ranks (processes) of every stage decode the
same greedy tokens as the unsharded model, with rows joining and leaving the batch, and each
rank holds half of its stage's weights and of its KV cache. With a LoRA adapter on every
projection, rows that ask for it and rows that do not still decode as the unsharded model."""

from __future__ import annotations

import pytest

from hack.tiny_model import ensure_tiny_model
from hack.tp_local import run_group, unsharded


@pytest.fixture(scope="module")
def tiny():
    return ensure_tiny_model()


@pytest.mark.parametrize("pp", [1, 2], ids=["tp2", "tp2xpp2"])
def test_tensor_parallel_greedy_equals_unsharded(tiny, pp):
    ref = unsharded(tiny, pp)
    ranks = run_group(tiny, tp=2, pp=pp)
    assert ranks[0]["tokens"] == ref["tokens"]
    assert ranks[1]["forwards"] > 0
    for rank in ranks:
        assert rank["kv_heads"] == 2  # of the tiny model's 4
        for mine, whole in zip(rank["stage_bytes"], ref["stage_bytes"], strict=True):
            assert 0.49 < mine / whole < 0.52, (mine, whole)
        for mine, whole in zip(rank["layer_bytes"], ref["layer_bytes"], strict=True):
            assert 0.49 < mine / whole < 0.52, (mine, whole)
        assert [2 * c for c in rank["cache_bytes"]] == ref["cache_bytes"]


@pytest.fixture(scope="module")
def lora(tiny, tmp_path_factory):
    """A LoRA adapter on all four projections, with random (non-zero) ``B``: peft's default
    initialisation makes ``B`` zero, and a delta of zero would prove nothing."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    targets = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)
    out = tmp_path_factory.mktemp("lora") / "every-projection"
    get_peft_model(model, cfg).save_pretrained(out)
    return out


@pytest.mark.parametrize("pp", [1, 2], ids=["tp2", "tp2xpp2"])
def test_tensor_parallel_with_lora_equals_unsharded(tiny, lora, pp):
    adapters = [{"name": "every", "path": str(lora)}]
    rows = ["every", "__base__", "every", "__base__"]
    ref = unsharded(tiny, pp, adapters, rows)
    plain = unsharded(tiny, pp)
    assert ref["tokens"][0] != plain["tokens"][0]  # the adapter changes what is generated
    assert ref["tokens"][1] == plain["tokens"][1]  # and base rows beside it are untouched
    ranks = run_group(tiny, tp=2, pp=pp, adapters=adapters, rows=rows)
    assert ranks[0]["tokens"] == ref["tokens"]


def test_dora_with_tensor_parallelism_is_refused():
    from torch import nn

    from rayserve.tensor_parallel import column_parallel

    class FakeDora(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base_layer, self.use_dora = nn.Linear(4, 4), {"a": True}
            self.lora_A, self.lora_B = nn.ModuleDict(), nn.ModuleDict()

    with pytest.raises(NotImplementedError, match="DoRA"):
        column_parallel(FakeDora(), [(0, 2)])


def test_uneven_heads_are_refused():
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    from rayserve.tensor_parallel import shard_layers

    cfg = Phi3Config(
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=3,
        num_key_value_heads=3,
        vocab_size=64,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
    )
    with torch.device("cpu"):
        model = Phi3ForCausalLM(cfg)
    with pytest.raises(ValueError, match="attention heads"):
        shard_layers(model.model.layers, 0, 2)


def test_a_vocabulary_that_does_not_split_stays_whole():
    from types import SimpleNamespace

    from torch import nn

    from rayserve.tensor_parallel import shard_ends

    emb, head = nn.Embedding(63, 8), nn.Linear(8, 63)
    model = SimpleNamespace(
        config=SimpleNamespace(vocab_size=63), model=SimpleNamespace(embed_tokens=emb), lm_head=head
    )
    shard_ends(model, True, True, 0, 2)  # no group needed: nothing is split
    assert model.model.embed_tokens is emb and model.lm_head is head


def test_a_rank_finds_the_gpu_ray_assigned_it():
    from rayserve.loading import ray_gpu_index

    assert ray_gpu_index(0, ["3"], "3") == 0  # Ray narrowed CUDA_VISIBLE_DEVICES: its own is cuda:0
    assert ray_gpu_index(1, ["2", "5"], "0,2,5") == 2
    assert ray_gpu_index(0, ["6"], None) == 6  # RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES
    assert ray_gpu_index(1, [], None) == 1  # outside Ray: among the visible devices
