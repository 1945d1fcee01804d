"""rayserve.tuning.config: Kaito's training_config.yaml -> TuningConfig, and the CLI's precedence
(rayserve.tuning.cli)."""

from __future__ import annotations

import logging

import pytest

from rayserve.tuning.cli import config_from_args
from rayserve.tuning.config import (
    FIELD_MAP,
    MAX_CONFIG_BYTES,
    TrainingConfigError,
    TuningConfig,
    parse_training_config,
)

# Kaito's qlora-params-template (charts/kaito/workspace/templates/qlora-params.yaml), with the
# e2e test's target_modules and max_steps, comments included.
KAITO_QLORA = """\
training_config:
  ModelConfig: # https://huggingface.co/docs/transformers/v4.40.2/en/model_doc/auto
    torch_dtype: "bfloat16"
    local_files_only: true
    device_map: "auto"

  QuantizationConfig:
    load_in_4bit: true
    bnb_4bit_quant_type: "nf4"
    bnb_4bit_compute_dtype: "bfloat16"
    bnb_4bit_use_double_quant: true

  LoraConfig:
    r: 8
    lora_alpha: 8
    lora_dropout: 0.0
    target_modules: ['k_proj', 'q_proj', 'v_proj', 'o_proj', "gate_proj", "down_proj", "up_proj"]

  TrainingArguments:
    output_dir: "/mnt/results"
    # num_train_epochs: <Defaults to 3, adjustable>
    ddp_find_unused_parameters: false
    save_strategy: "epoch"
    per_device_train_batch_size: 1
    max_steps: 2

  DataCollator:
    mlm: true

  DatasetConfig:
    shuffle_dataset: true
    train_test_split: 1
"""

KAITO_LORA = """\
training_config:
  QuantizationConfig:
    load_in_4bit: false
  LoraConfig: {r: 8, lora_alpha: 8, lora_dropout: 0.0}
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(TrainingConfigError) as info:
        parse_training_config(text)
    assert str(info.value) == "; ".join(info.value.problems)
    return info.value.problems


def test_kaito_qlora_template_maps_onto_the_trainer() -> None:
    cfg = parse_training_config(KAITO_QLORA)
    assert cfg.overrides() == {
        "rank": 8,
        "alpha": 8,
        "dropout": 0.0,
        "target_modules": ["k_proj", "q_proj", "v_proj", "o_proj", "gate_proj", "down_proj", "up_proj"],
        "output": "/mnt/results",
        "max_steps": 2,
        "batch_size": 1,
        "method": "qlora",
        "quant_type": "nf4",
        "compute_dtype": "bfloat16",
        "double_quant": True,
    }
    assert cfg.method_problem("qlora") is None
    assert "use method qlora" in (cfg.method_problem("lora") or "")
    warnings = "\n".join(cfg.warnings())
    for ignored in (
        "ModelConfig: ignoring torch_dtype, local_files_only, device_map",
        "DataCollator: ignoring mlm",
        "DatasetConfig: ignoring shuffle_dataset, train_test_split",
        "TrainingArguments: ignoring ddp_find_unused_parameters, save_strategy",
    ):
        assert ignored in warnings


def test_kaito_lora_template_and_the_method_rule() -> None:
    cfg = parse_training_config(KAITO_LORA)
    assert cfg.overrides()["method"] == "lora"
    assert cfg.method_problem("lora") is None
    assert "qlora needs QuantizationConfig.load_in_4bit: true" in (cfg.method_problem("qlora") or "")
    # no QuantizationConfig at all: lora is fine, qlora is not (Kaito's webhook rule)
    bare = parse_training_config("training_config:\n  LoraConfig: {r: 4}\n")
    assert "method" not in bare.overrides()
    assert bare.method_problem("lora") is None and bare.method_problem("qlora")


def test_sections_at_the_top_level_and_empty_ones_are_accepted() -> None:
    cfg = parse_training_config("LoraConfig: {r: 4}\nTrainingArguments: {learning_rate: 1e-3}\nDataCollator:")
    assert cfg.overrides() == {"rank": 4, "lr": 1e-3}  # YAML 1.1 reads 1e-3 as a string: still a float
    assert cfg.warnings() == ["DataCollator: ignoring (empty section) (not implemented by this trainer)"]
    assert parse_training_config("training_config:\n").overrides() == {}


def test_max_steps_minus_one_means_no_limit() -> None:
    assert "max_steps" not in parse_training_config("TrainingArguments: {max_steps: -1}").overrides()
    [problem] = _problems("TrainingArguments: {max_steps: 0}")
    assert problem.startswith("TrainingArguments.max_steps: must be >= 1, or -1")


def test_bad_values_are_reported_together_each_naming_its_key() -> None:
    problems = _problems(
        "training_config:\n"
        "  LoraConfig: {r: -1, lora_dropout: 2, lora_alpha: 0, target_modules: []}\n"
        "  TrainingArguments: {learning_rate: fast, per_device_train_batch_size: 0}\n"
        "  QuantizationConfig: {load_in_8bit: true, bnb_4bit_quant_type: int8}\n"
    )
    text = "\n".join(problems)
    assert "LoraConfig.r: Input should be greater than or equal to 1 (got -1)" in text
    assert "LoraConfig.lora_dropout: Input should be less than 1 (got 2)" in text
    assert "LoraConfig.lora_alpha: Input should be greater than 0 (got 0)" in text
    assert "LoraConfig.target_modules: expected a non-empty list of module names" in text
    assert "TrainingArguments.learning_rate: Input should be a valid number" in text
    assert "TrainingArguments.per_device_train_batch_size: Input should be greater than or equal to 1" in text
    assert "QuantizationConfig.load_in_8bit: 8-bit loading is not supported" in text
    assert "QuantizationConfig.bnb_4bit_quant_type: Input should be 'nf4' or 'fp4' (got 'int8')" in text
    assert len(problems) == 8


def test_typos_are_errors_that_name_the_supported_key() -> None:
    problems = _problems(
        "training_config:\n"
        "  LoraConfig: {lora_dropuot: 0.1, R: 4}\n"
        "  TrainingArguments: {max_step: 5, lr: 0.1, num_train_epoch: 2}\n"
        "  TrainingArgument: {}\n"
    )
    assert problems == [
        "LoraConfig.lora_dropuot: unknown key; did you mean lora_dropout?",
        "LoraConfig.R: unknown key; did you mean r?",
        "TrainingArguments.max_step: unknown key; did you mean max_steps?",
        "TrainingArguments.lr: unknown key; did you mean learning_rate?",  # our own flag's name
        "TrainingArguments.num_train_epoch: unknown key; did you mean num_train_epochs?",
        "TrainingArgument: unknown section; did you mean TrainingArguments?",
    ]


def test_real_hugging_face_fields_are_ignored_not_mistaken_for_typos() -> None:
    cfg = parse_training_config(
        "TrainingArguments: {per_device_eval_batch_size: 2, data_seed: 1, some_future_flag: 1}\n"
        "LoraConfig: {bias: none, use_dora: true}\n"
        "QuantizationConfig: {llm_int8_threshold: 6.0}\n"
    )
    assert cfg.overrides() == {}
    assert cfg.ignored == {
        "TrainingArguments": ["per_device_eval_batch_size", "data_seed", "some_future_flag"],
        "LoraConfig": ["bias", "use_dora"],
        "QuantizationConfig": ["llm_int8_threshold"],
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a list", "expected a mapping of sections (under training_config:), got list"),
        ("", "got an empty document"),
        ("training_config: 3", "training_config: expected a mapping of sections, got int"),
        ("training_config: {}\nextra: 1", "unexpected top-level keys next to training_config: extra"),
        ("LoraConfig: [r, 8]", "LoraConfig: expected a mapping, got list"),
        ("Trainer: {}", "Trainer: unknown section; known sections: LoraConfig, TrainingArguments"),
        ("LoraConfig: {r: [", "not valid YAML"),
    ],
)
def test_malformed_files(text: str, expected: str) -> None:
    assert expected in "; ".join(_problems(text))


def test_every_mapped_key_lands_on_a_tuning_config_field() -> None:
    assert set(FIELD_MAP.values()) <= set(TuningConfig.model_fields)


def test_tuning_config_defaults_are_kaitos_lora_template() -> None:
    cfg = TuningConfig(model="m", data="d", output="o")
    assert (cfg.rank, cfg.alpha, cfg.dropout) == (8, 8, 0.0)


# --- python -m rayserve.tuning ----------------------------------------------------------------------

BASE = ["--model", "m", "--data", "d.jsonl"]


def test_flags_win_over_the_file_and_the_file_over_defaults(tmp_path, caplog) -> None:
    path = tmp_path / "training_config.yaml"
    path.write_text("training_config:\n  LoraConfig: {r: 4, lora_alpha: 16}\n"
                    "  TrainingArguments: {output_dir: /out, max_steps: 3}\n  DataCollator: {mlm: true}\n")
    with caplog.at_level(logging.INFO, logger="rayserve.tuning.cli"):
        cfg = config_from_args([*BASE, "--config", str(path), "--rank", "2", "--target-modules", "q,v"])
    assert (cfg.rank, cfg.alpha, cfg.max_steps, cfg.output) == (2, 16, 3, "/out")
    assert cfg.target_modules == ["q", "v"] and cfg.dropout == 0.0 and cfg.method == "lora"
    assert "flags override the config file for: rank" in caplog.text
    assert "DataCollator: ignoring mlm" in caplog.text
    assert config_from_args([*BASE, "--config", str(path)]).rank == 4
    assert config_from_args([*BASE, "--output", "/o"]).rank == 8


def test_the_file_sets_the_method_unless_a_flag_does(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("QuantizationConfig: {load_in_4bit: true, bnb_4bit_compute_dtype: float16}\n")
    cfg = config_from_args([*BASE, "--output", "o", "--config", str(path)])
    assert (cfg.method, cfg.compute_dtype, cfg.quant_type) == ("qlora", "float16", "nf4")
    flagged = config_from_args([*BASE, "--output", "o", "--config", str(path), "--method", "lora"])
    assert flagged.method == "lora"


def test_usage_errors_name_the_problem(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("LoraConfig: {r: -1}\n")
    for argv, expected in [
        ([*BASE, "--config", str(bad), "--output", "o"], "LoraConfig.r: Input should be greater than"),
        ([*BASE, "--config", str(tmp_path / "missing.yaml"), "--output", "o"], "cannot read"),
        (BASE, "--output is required (or TrainingArguments.output_dir in --config)"),
        ([*BASE, "--output", "o", "--dropout", "1.5"], "dropout: Input should be less than 1"),
    ]:
        with pytest.raises(SystemExit) as info:
            config_from_args(argv)
        assert info.value.code == 2
        assert expected in capsys.readouterr().err


def test_data_flag_repeats_and_a_single_string_still_validates() -> None:
    argv = ["--model", "m", "--data", "a.jsonl", "--data", "https://x/b.parquet", "--output", "/o"]
    cfg = config_from_args(argv)
    assert cfg.data == ["a.jsonl", "https://x/b.parquet"]
    assert TuningConfig(model="m", data="d", output="o").data == ["d"]


def test_aliases_huge_files_and_huge_values_are_refused_briefly() -> None:
    # "billion laughs": a few hundred bytes whose printout would be gigabytes
    levels = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    bomb = "\n".join([*levels, "LoraConfig: {r: *a7}"])
    with pytest.raises(TrainingConfigError, match="aliases"):
        parse_training_config(bomb)
    with pytest.raises(TrainingConfigError, match="at most"):
        parse_training_config("#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(TrainingConfigError) as caught:
        parse_training_config("LoraConfig: {r: [" + ", ".join(["1"] * 5000) + "]}")
    assert "LoraConfig.r" in str(caught.value) and len(str(caught.value)) < 200


def test_the_trainer_takes_the_presets_pinned_revision() -> None:
    """The tuning Job passes ``--revision`` (the preset's commit); without it the base model floats."""
    sha = "0a67737cc96d2554230f90338b163bc6380a2a85"
    assert config_from_args([*BASE, "--output", "o", "--revision", sha]).revision == sha
    assert config_from_args([*BASE, "--output", "o"]).revision is None
