"""rayserve.tuning with a Kaito training_config.yaml: the file's LoRA and TrainingArguments values
reach the adapter it writes (CPU, the tiny model)."""

from __future__ import annotations

import json

import pytest

from tests.serve.conftest import QA, write_dataset

pytestmark = pytest.mark.serve


def test_training_config_file_sets_rank_steps_and_output(tiny_model, tmp_path):
    from rayserve.tuning.train import main

    data = write_dataset(tmp_path / "d.jsonl", QA)
    out = tmp_path / "results" / "adapter"
    config = tmp_path / "training_config.yaml"
    config.write_text(
        "training_config:\n"
        "  ModelConfig: {torch_dtype: bfloat16, local_files_only: true}\n"  # ignored, with a warning
        "  QuantizationConfig: {load_in_4bit: false}\n"
        "  LoraConfig:\n"
        "    r: 4\n"
        "    lora_alpha: 8\n"
        "    lora_dropout: 0.0\n"
        "    target_modules: [qkv_proj, o_proj]\n"
        "  TrainingArguments:\n"
        f"    output_dir: {out}\n"
        "    max_steps: 3\n"
        "    per_device_train_batch_size: 2\n"
        "    learning_rate: 1e-3\n"
        "    save_strategy: epoch\n"  # ignored, with a warning
    )
    result = main(["--model", str(tiny_model), "--data", str(data), "--config", str(config)])
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["lora_alpha"] == 8 and adapter["lora_dropout"] == 0.0
    assert sorted(adapter["target_modules"]) == ["o_proj", "qkv_proj"]
    assert result["steps"] == 3 and result["method"] == "lora"
    assert json.loads((out / "training_result.json").read_text())["steps"] == 3


@pytest.mark.timeout(300)
def test_kaito_sample_accumulation_longer_than_the_dataset_ends(tiny_model, tmp_path):
    """Kaito's sample (batch 1, gradient_accumulation_steps 4) on three rows for two epochs: one
    short step per pass, two in all. The first trainer never stepped here and never ended."""
    from rayserve.tuning.train import main

    data = write_dataset(tmp_path / "d.jsonl", QA[:3])
    out = tmp_path / "adapter"
    config = tmp_path / "training_config.yaml"
    config.write_text(
        "training_config:\n"
        "  QuantizationConfig: {load_in_4bit: false}\n"
        "  LoraConfig: {r: 4, lora_alpha: 8, lora_dropout: 0.0, target_modules: [qkv_proj]}\n"
        "  TrainingArguments:\n"
        f"    output_dir: {out}\n"
        "    num_train_epochs: 2\n"
        "    per_device_train_batch_size: 1\n"
        "    gradient_accumulation_steps: 4\n"
    )
    result = main(["--model", str(tiny_model), "--data", str(data), "--config", str(config)])
    assert result["steps"] == 2 and result["examples"] == 3
