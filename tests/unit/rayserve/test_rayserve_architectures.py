"""Each architecture the catalog marks supported decodes through our engine exactly as
transformers' ``generate`` does: greedy, token for token, unsharded and split into 2 pipeline
stages (each stage loading only its share of the checkpoint), with rows joining and leaving
the running batch mid-generation.

Why per architecture: the engine is ours (its own KV cache, stage split and batching), so a
model class it has not been run on may be silently wrong (a mask, a rotary, a module path).
The catalog's ``architectures`` table claims support only where a case here is green.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from presets.registry import default_catalog
from rayserve.engine import Engine
from rayserve.loading import load_model, load_stage_converted, load_stage_model, safetensors_weight_map
from rayserve.params import SamplingParams
from rayserve.pipeline import LocalPipeline
from rayserve.spec import ModelSpec
from rayserve.stage import PipelineStage, StageInput, split_layers
from tests.unit.rayserve.tiny_archs import COMMON, TINY_CONFIGS, build_tiny

CPU = torch.device("cpu")
# different lengths and arrival times with 3 slots: the 4th row joins when the 1st leaves
PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [20, 21, 22], [30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40], [50, 51]]
LENGTHS = [6, 12, 8, 10]


def _reference(spec: ModelSpec) -> list[list[int]]:
    model = load_model(spec, CPU)
    out = []
    for prompt, n in zip(PROMPTS, LENGTHS, strict=True):
        ids = torch.tensor([prompt])
        gen = model.generate(
            ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0
        )
        out.append(gen[0, ids.shape[1] :].tolist())
    return out


def _engine_tokens(pipe) -> list[list[int]]:
    async def main() -> list[list[int]]:
        engine = Engine(pipe, eos_ids=set(), max_batch_size=3)

        async def one(i: int) -> list[int]:
            await asyncio.sleep(0.01 * i)
            params = SamplingParams(max_new_tokens=LENGTHS[i])
            return [ev.token_id async for ev in engine.generate(PROMPTS[i], params)]

        try:
            return await asyncio.gather(*[one(i) for i in range(len(PROMPTS))])
        finally:
            await engine.close()

    return asyncio.run(main())


@pytest.mark.parametrize("case", sorted(TINY_CONFIGS))
def test_architecture_decodes_like_generate(case: str, tmp_path: Path):
    spec = ModelSpec(name=case, path=str(build_tiny(case, tmp_path / case)))
    expected = _reference(spec)
    assert _engine_tokens(LocalPipeline.load(spec, stages=1, gpus=0)) == expected, "unsharded"
    layers = COMMON["num_hidden_layers"]
    stages = [
        PipelineStage(load_stage_model(spec, a, b, CPU), a, b, CPU, prune=True)
        for a, b in split_layers(layers, 2)
    ]
    assert _engine_tokens(LocalPipeline(stages)) == expected, "2 pipeline stages"


@pytest.mark.parametrize("case", sorted(TINY_CONFIGS))
def test_architecture_logits_match_the_models_forward(case: str, tmp_path: Path):
    """Greedy tokens survive a monotone slip (logits scaled, soft-capped); sampling does not: the
    stages' last-position logits must be the model's own."""
    spec = ModelSpec(name=case, path=str(build_tiny(case, tmp_path / case)))
    model = load_model(spec, CPU)
    ids = torch.tensor([PROMPTS[2]])
    with torch.inference_mode():
        want = model(input_ids=ids).logits[:, -1].float()
    pipe = LocalPipeline.load(spec, stages=1, gpus=0)
    mask, positions = torch.ones_like(ids, dtype=torch.bool), torch.arange(ids.shape[1])[None]
    inp = StageInput(mask=mask, positions=positions, cache_key="t")
    got = pipe.stages[0].forward(ids, inp)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# checkpoints whose tensors transformers converts at load: per-expert tensors fused into one
# parameter (DeepSeek V3's MoE), FP8 blocks + scales its quantizer reads
CONVERTED = ["DeepseekV3ForCausalLM", "GptOssForCausalLM-mxfp4", "Mistral3ForConditionalGeneration-fp8"]


def _layer_of(key: str) -> int | None:
    parts = key.split(".")
    return int(parts[parts.index("layers") + 1]) if "layers" in parts else None


@pytest.mark.parametrize("case", CONVERTED)
def test_a_converted_checkpoints_stage_reads_only_its_share(case: str, tmp_path: Path):
    """Each stage hands transformers' converter only the checkpoint tensors of its own layers
    (and the embedding / head it owns): a node holds its stages' share, not the checkpoint once
    per stage. Together the stages read every text tensor exactly once."""
    spec = ModelSpec(name=case, path=str(build_tiny(case, tmp_path / case)))
    weights = safetensors_weight_map(spec.path)
    assert weights is not None
    seen: list[str] = []
    for a, b in split_layers(COMMON["num_hidden_layers"], 2):
        _, read = load_stage_converted(spec, a, b, CPU, weights)
        layers = {_layer_of(k) for k in read} - {None}
        assert layers == set(range(a, b)), f"stage [{a}, {b}) read layers {sorted(layers)}"
        assert any(k.endswith(("_blocks", "weight_scale_inv")) or ".experts.0." in k for k in read)
        seen += read
    text = [k for k in weights if "vision" not in k and "multi_modal_projector" not in k]
    assert sorted(seen) == sorted(text)


def test_a_multimodal_config_is_read_through_its_text_model():
    """Gemma 3's and Mistral 3's configs keep layers and positions in text_config; the serve path
    (layer count for the stage split, context limit) must read them there."""
    from rayserve.loading import context_limit

    for case in ("Gemma3ForConditionalGeneration", "Mistral3ForConditionalGeneration"):
        config = TINY_CONFIGS[case][1]()
        assert config.get_text_config().num_hidden_layers == COMMON["num_hidden_layers"]
        spec = ModelSpec(name=case, path="unused", max_context=4096)
        assert context_limit(spec, config) == COMMON["max_position_embeddings"]


def test_the_catalog_claims_support_only_for_proven_architectures():
    catalog = default_catalog()
    proven = {arch for arch, _ in TINY_CONFIGS.values()}
    for arch in catalog.architectures.values():
        if arch.supported:
            assert arch.name in proven, f"{arch.name} is marked supported without a proof case"
            assert arch.proof and arch.proof.split("[")[1].rstrip("]") in TINY_CONFIGS
        else:
            assert arch.why, f"{arch.name} is refused without saying why"
    for quant in catalog.quantizations.values():
        if quant.supported:
            assert quant.proof and quant.proof.split("[")[1].rstrip("]") in TINY_CONFIGS, quant.name
    used = {p.architecture for p in catalog.presets.values()}
    assert used <= set(catalog.architectures), "every preset's architecture is in the table"
