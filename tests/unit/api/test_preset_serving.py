"""What the webhook says about presets the engine cannot serve."""

from __future__ import annotations

from controller.api.validation import validate_workspace_object


def ws(preset: str, instance_type: str = "Standard_NC24ads_A100_v4", **resource) -> dict:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "ws", "namespace": "default"},
        "resource": {"instanceType": instance_type, "labelSelector": {"matchLabels": {"a": "b"}}, **resource},
        "inference": {"preset": {"name": preset}},
    }


def test_an_unproven_architecture_is_refused_naming_it_and_what_is_served():
    result = validate_workspace_object(ws("nvidia/NVIDIA-Nemotron-Nano-9B-v2"))
    assert not result.allowed
    msg = result.message
    assert msg.startswith("inference.preset.name: preset nvidia/NVIDIA-Nemotron-Nano-9B-v2 is a NemotronH")
    assert "it serves: DeepseekV3ForCausalLM, FalconForCausalLM, Gemma3ForConditionalGeneration" in msg


def test_a_proven_architecture_in_an_unproven_weight_format_is_refused():
    msg = validate_workspace_object(ws("Qwen/Qwen3-8B-AWQ")).message
    assert "preset Qwen/Qwen3-8B-AWQ ships awq weights" in msg
    assert "Pick a preset with unquantized weights" in msg


def test_mxfp4_is_served_dequantized_and_refused_where_bfloat16_is_missing():
    assert validate_workspace_object(ws("gpt-oss-20b")).allowed
    msg = validate_workspace_object(ws("gpt-oss-20b", "Standard_NC6s_v3")).message
    assert "runs dequantized to bfloat16: that needs GPUs of CUDA compute capability 8.0" in msg


def test_a_catalog_entry_named_by_its_hugging_face_id_is_found_and_judged():
    assert validate_workspace_object(ws("ibm-granite/granite-4.1-8b")).allowed
    refused = validate_workspace_object(ws("Qwen/Qwen3.5-9B"))
    assert "Qwen3_5ForConditionalGeneration" in refused.message and "recurrent state" in refused.message


def test_kaito_deprecated_preset_is_refused():
    assert "model phi-2 is deprecated" in validate_workspace_object(ws("phi-2")).message


def test_falcon_presets_are_served():
    assert validate_workspace_object(ws("falcon-40b-instruct", "Standard_NC96ads_A100_v4")).allowed
