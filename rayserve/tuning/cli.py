"""The command line of ``python -m rayserve.tuning``: flags and ``--config`` -> ``TuningConfig``.

Kept apart from ``rayserve.tuning.config`` (the knobs and the ``training_config.yaml`` parser) so
the controller, which checks a Workspace's ConfigMap with that parser, imports no CLI code.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticUndefined

from rayserve.tuning.config import (
    CONFIG_KEY,
    TrainingConfigError,
    TrainingConfigFile,
    TuningConfig,
    parse_training_config,
)

log = logging.getLogger(__name__)

# flag -> (type, help); every default comes from TuningConfig, so flags left out are told apart
# from flags given (argparse.SUPPRESS) and a --config file can fill them.
_FLAGS: dict[str, tuple[type, str]] = {
    "--model": (str, "base model directory"),
    "--revision": (str, "the hub commit of a hub-id --model (the preset's pin)"),
    "--data": (str, "a dataset of OpenAI-chat rows (jsonl, json, parquet, arrow, csv): a path, a directory "
                    "or an http(s)/file URL; repeat the flag for several"),
    "--output": (str, "adapter output directory (or TrainingArguments.output_dir in --config)"),
    "--rank": (int, "LoRA r"),
    "--alpha": (float, "LoRA alpha"),
    "--dropout": (float, "LoRA dropout"),
    "--target-modules": (str, "'all-linear' or a comma list"),
    "--epochs": (float, "epochs (unless --max-steps)"),
    "--max-steps": (int, "optimizer steps (default: from --epochs)"),
    "--batch-size": (int, "examples per micro-batch"),
    "--grad-accum": (int, "micro-batches per optimizer step"),
    "--lr": (float, "AdamW learning rate"),
    "--max-length": (int, "tokens per example (longer ones are cut)"),
    "--seed": (int, "seed for init, shuffling and dropout"),
}


def build_parser(description: str = "") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rayserve.tuning", description=description,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--config", help=f"Kaito's {CONFIG_KEY} (see rayserve.tuning.config); "
                                    "flags given on the command line win over it")
    p.add_argument("--method", choices=["lora", "qlora"], help="default: lora, or qlora when the config "
                                                                "sets QuantizationConfig.load_in_4bit")
    for flag, (kind, text) in _FLAGS.items():
        default = TuningConfig.model_fields[flag[2:].replace("-", "_")].default
        shown = "" if default in (PydanticUndefined, None) else f" (default: {default})"
        action = "append" if flag == "--data" else "store"  # Kaito's input.urls is a list
        p.add_argument(flag, type=kind, help=text + shown, required=flag in ("--model", "--data"),
                       action=action)
    return p


def _read_config_file(path: str) -> TrainingConfigFile:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise TrainingConfigError([f"cannot read {path}: {exc.strerror}"]) from None
    return parse_training_config(text)


def config_from_args(argv: list[str] | None = None, description: str = "") -> TuningConfig:
    """Flags -> TuningConfig, with ``--config``: explicit flags > the file > TuningConfig's defaults.

    Why flags win: a flag is the most specific statement of intent (a one-off override of a shared
    ConfigMap, or the controller's ``--method``/``--output`` from the Workspace spec), and this is
    the rule people expect from kubectl, pip and most CLIs. Each override is logged. A bad file or
    a bad value exits with a usage error naming the key, not a traceback.
    """
    p = build_parser(description)
    given = vars(p.parse_args(argv))
    from_file: dict[str, Any] = {}
    if "config" in given:
        path = given.pop("config")
        try:
            parsed = _read_config_file(path)
        except TrainingConfigError as exc:
            p.error(f"--config {path}: {exc}")
        for line in parsed.warnings():
            log.warning("training config %s: %s", path, line)
        from_file = parsed.overrides()
    if isinstance(given.get("target_modules"), str) and given["target_modules"] != "all-linear":
        given["target_modules"] = given["target_modules"].split(",")
    overridden = sorted(k for k in given if k in from_file and given[k] != from_file[k])
    if overridden:
        log.info("flags override the config file for: %s", ", ".join(overridden))
    if "output" not in given and "output" not in from_file:
        p.error("--output is required (or TrainingArguments.output_dir in --config)")
    try:
        return TuningConfig(**{**from_file, **given})
    except ValidationError as exc:
        p.error("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
