"""The knobs of one tuning run, and Kaito's ``training_config.yaml`` mapped onto them.

Kept free of torch and of the command line (``rayserve.tuning.cli``) so the controller can
validate a Workspace's tuning ConfigMap with the very model the trainer uses (one source of truth:
what the controller accepts, the Job accepts).

``training_config.yaml`` is Kaito's file: sections named after the Hugging Face classes they
configure, under a top-level ``training_config:`` key (sections at the top level are accepted
too). What happens to each part, decided so that a Kaito config either works here or says
clearly why not:

- ``LoraConfig`` (r, lora_alpha, lora_dropout, target_modules), ``TrainingArguments``
  (output_dir, num_train_epochs, max_steps, per_device_train_batch_size,
  gradient_accumulation_steps, learning_rate, seed) and ``QuantizationConfig`` (load_in_4bit,
  load_in_8bit, bnb_4bit_quant_type, bnb_4bit_compute_dtype, bnb_4bit_use_double_quant) are
  implemented: their values are validated and become ``TuningConfig`` fields (``FIELD_MAP``).
- ``TrainingArguments.max_runtime_seconds`` is this project's own key, not Hugging Face's: the
  tuning Job's ``activeDeadlineSeconds`` (``JOB_DEADLINE_SECONDS`` when unset), so a run that
  hangs or loops stops and frees its GPU; the trainer itself does not read it.
- ``ModelConfig``, ``TokenizerParams``, ``DataCollator`` and ``DatasetConfig`` are Kaito sections
  this trainer does not implement (it picks the dtype and device itself, reads OpenAI-chat rows,
  masks everything but the answers): accepted and ignored, listed in a warning.
- In an implemented section, a key this trainer does not implement is ignored with a warning when
  it is a real field of the Hugging Face class (``save_strategy``, ``bias``...) or unlike any
  supported key (a field of a newer transformers/peft, say); but a key that looks like a typo of
  a supported one (``lora_dropuot``, ``max_step``, ``R``) is an error naming both, because
  silently training with the default instead is the worst outcome.
- Any other section is an error (Kaito's webhook rejects it too), with a suggestion when it is
  close to a known one.

Keys a file leaves out keep this trainer's defaults, which are not Hugging Face's (1 epoch, not
3; learning rate 2e-4, not 5e-5; batch size 4, not 8); LoRA's defaults are Kaito's template's
(r=8, lora_alpha=8, lora_dropout=0).
"""

from __future__ import annotations

import difflib
import reprlib
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# --- the knobs of one run -----------------------------------------------------------------------


class TuningConfig(BaseModel):
    """The knobs of one tuning run: CLI flags map 1:1, ``training_config.yaml`` through FIELD_MAP."""

    model_config = ConfigDict(extra="forbid")

    model: str
    revision: str | None = Field(None, description="the hub commit of a hub-id model (None: main)")
    data: list[str] = Field(min_length=1, description="datasets: paths, directories or URLs, read in order")
    output: str
    method: Literal["lora", "qlora"] = "lora"
    rank: int = Field(8, ge=1)
    alpha: float = Field(8, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | str = "all-linear"
    epochs: float = Field(1, gt=0)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(2e-4, gt=0)
    max_length: int = Field(1024, ge=8)
    seed: int = 0
    # QLoRA's 4-bit loading (bitsandbytes); only read when method is qlora
    quant_type: Literal["nf4", "fp4"] = "nf4"
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    double_quant: bool = True

    @field_validator("data", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


# --- training_config.yaml -----------------------------------------------------------------------

CONFIG_KEY = "training_config.yaml"  # the ConfigMap key Kaito reads
ROOT_KEY = "training_config"

# (section, key) -> TuningConfig field
FIELD_MAP: dict[tuple[str, str], str] = {
    ("LoraConfig", "r"): "rank",
    ("LoraConfig", "lora_alpha"): "alpha",
    ("LoraConfig", "lora_dropout"): "dropout",
    ("LoraConfig", "target_modules"): "target_modules",
    ("TrainingArguments", "output_dir"): "output",
    ("TrainingArguments", "num_train_epochs"): "epochs",
    ("TrainingArguments", "max_steps"): "max_steps",
    ("TrainingArguments", "per_device_train_batch_size"): "batch_size",
    ("TrainingArguments", "gradient_accumulation_steps"): "grad_accum",
    ("TrainingArguments", "learning_rate"): "lr",
    ("TrainingArguments", "seed"): "seed",
    ("QuantizationConfig", "load_in_4bit"): "method",
    ("QuantizationConfig", "bnb_4bit_quant_type"): "quant_type",
    ("QuantizationConfig", "bnb_4bit_compute_dtype"): "compute_dtype",
    ("QuantizationConfig", "bnb_4bit_use_double_quant"): "double_quant",
}

# Keys the controller reads for the Job and the trainer does not (see the module docstring).
JOB_KEYS: dict[str, tuple[str, ...]] = {"TrainingArguments": ("max_runtime_seconds",)}
JOB_DEADLINE_SECONDS = 24 * 3600  # a day: longer than any preset's tuning run on its SKU
MAX_JOB_DEADLINE_SECONDS = 30 * 24 * 3600

# Kaito sections this trainer does not implement: accepted, ignored with a warning.
IGNORED_SECTIONS = ("ModelConfig", "TokenizerParams", "DataCollator", "DatasetConfig")

# Real fields of the Hugging Face classes behind the implemented sections that this trainer does
# not implement: ignored with a warning, never mistaken for typos of the supported keys
# (per_device_eval_batch_size is close to per_device_train_batch_size, data_seed to seed).
KNOWN_UNSUPPORTED: dict[str, frozenset[str]] = {
    "LoraConfig": frozenset({
        "alpha_pattern", "auto_mapping", "base_model_name_or_path", "bias", "corda_config", "eva_config",
        "exclude_modules", "fan_in_fan_out", "inference_mode", "init_lora_weights", "layer_replication",
        "layers_pattern", "layers_to_transform", "loftq_config", "lora_bias", "megatron_config",
        "megatron_core", "modules_to_save", "peft_type", "rank_pattern", "revision", "runtime_config",
        "target_parameters", "task_type", "trainable_token_indices", "use_dora", "use_rslora",
    }),
    "TrainingArguments": frozenset({
        "adam_beta1", "adam_beta2", "adam_epsilon", "auto_find_batch_size", "bf16", "data_seed",
        "dataloader_num_workers", "dataloader_pin_memory", "ddp_find_unused_parameters", "disable_tqdm",
        "do_eval", "do_train", "eval_steps", "eval_strategy", "evaluation_strategy", "fp16",
        "gradient_checkpointing", "group_by_length", "label_names", "load_best_model_at_end",
        "logging_dir", "logging_steps", "logging_strategy", "lr_scheduler_type", "max_grad_norm",
        "metric_for_best_model", "optim", "overwrite_output_dir", "per_device_eval_batch_size",
        "push_to_hub", "remove_unused_columns", "report_to", "run_name", "save_steps", "save_strategy",
        "save_total_limit", "tf32", "torch_compile", "warmup_ratio", "warmup_steps", "weight_decay",
    }),
    "QuantizationConfig": frozenset({
        "bnb_4bit_quant_storage", "llm_int8_enable_fp32_cpu_offload", "llm_int8_has_fp16_weight",
        "llm_int8_skip_modules", "llm_int8_threshold", "quant_method",
    }),
}


class _Section(BaseModel):
    # Only supported keys reach the models: the key policy (_split_keys) has removed the rest.
    model_config = ConfigDict(extra="forbid")


class LoraSection(_Section):
    r: int | None = Field(None, ge=1)
    lora_alpha: float | None = Field(None, gt=0)
    lora_dropout: float | None = Field(None, ge=0, lt=1)
    target_modules: list[str] | str | None = None

    @field_validator("target_modules", mode="before")
    @classmethod
    def _modules(cls, v: object) -> object:
        """peft's forms: a list of module names, or one string ('all-linear' or a regex)."""
        if v is None or (isinstance(v, str) and v):
            return v
        if isinstance(v, list) and v and all(isinstance(m, str) and m for m in v):
            return v
        raise ValueError("expected a non-empty list of module names, or 'all-linear'")


class TrainingArgumentsSection(_Section):
    output_dir: str | None = Field(None, min_length=1)
    num_train_epochs: float | None = Field(None, gt=0)
    max_steps: int | None = None
    per_device_train_batch_size: int | None = Field(None, ge=1)
    gradient_accumulation_steps: int | None = Field(None, ge=1)
    learning_rate: float | None = Field(None, gt=0)
    seed: int | None = None
    max_runtime_seconds: int | None = Field(None, ge=60, le=MAX_JOB_DEADLINE_SECONDS)

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, v: int | None) -> int | None:
        """-1 is Hugging Face's default: no step limit, train for num_train_epochs."""
        if v is None or v == -1:
            return None
        if v < 1:
            raise ValueError("must be >= 1, or -1 to train for num_train_epochs")
        return v


class QuantizationSection(_Section):
    load_in_4bit: bool | None = None
    load_in_8bit: bool | None = None
    bnb_4bit_quant_type: Literal["nf4", "fp4"] | None = None
    bnb_4bit_compute_dtype: Literal["bfloat16", "float16", "float32"] | None = None
    bnb_4bit_use_double_quant: bool | None = None

    @field_validator("load_in_8bit")
    @classmethod
    def _no_8bit(cls, v: bool | None) -> bool | None:
        if v:
            raise ValueError("8-bit loading is not supported by this trainer; use load_in_4bit: true (qlora)")
        return v


class TrainingConfigFile(BaseModel):
    """The supported part of a ``training_config.yaml``; ``ignored`` lists what was left out."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    lora: LoraSection = Field(default_factory=LoraSection, alias="LoraConfig")
    training: TrainingArgumentsSection = Field(default_factory=TrainingArgumentsSection,
                                               alias="TrainingArguments")
    quantization: QuantizationSection | None = Field(None, alias="QuantizationConfig")
    ignored: dict[str, list[str]] = Field(default_factory=dict, exclude=True)

    def overrides(self) -> dict[str, Any]:
        """The TuningConfig fields this file sets (and only those)."""
        sections = {"LoraConfig": self.lora, "TrainingArguments": self.training,
                    "QuantizationConfig": self.quantization}
        out: dict[str, Any] = {}
        for (section, key), name in FIELD_MAP.items():
            value = getattr(sections[section], key, None) if sections[section] is not None else None
            if value is None:
                continue
            out[name] = ("qlora" if value else "lora") if name == "method" else value
        return out

    @property
    def job_deadline_seconds(self) -> int:
        """The tuning Job's activeDeadlineSeconds: ``TrainingArguments.max_runtime_seconds``."""
        return self.training.max_runtime_seconds or JOB_DEADLINE_SECONDS

    def method_problem(self, method: str) -> str | None:
        """Kaito's rule for the Workspace's ``tuning.method`` against QuantizationConfig, or None."""
        four_bit = bool(self.quantization and self.quantization.load_in_4bit)
        if method == "lora" and four_bit:
            return ("method lora, but QuantizationConfig.load_in_4bit is true: use method qlora "
                    "or set it false")
        if method == "qlora" and not four_bit:
            return "method qlora needs QuantizationConfig.load_in_4bit: true"
        return None

    def warnings(self) -> list[str]:
        """One line per section with ignored settings, for the log."""
        return [f"{section}: ignoring {', '.join(keys) or '(empty section)'} "
                "(not implemented by this trainer)" for section, keys in self.ignored.items()]


class TrainingConfigError(ValueError):
    """A ``training_config.yaml`` this trainer cannot honour; ``problems`` each name a section.key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


SUPPORTED_SECTIONS = ("LoraConfig", "TrainingArguments", "QuantizationConfig")


def _supported_keys(section: str) -> list[str]:
    return [key for (s, key) in FIELD_MAP if s == section] + list(JOB_KEYS.get(section, ())) + (
        ["load_in_8bit"] if section == "QuantizationConfig" else [])


def _near(word: str, candidates: list[str] | tuple[str, ...]) -> str | None:
    """The candidate ``word`` is probably a misspelling of (case-insensitive equal, or close)."""
    lowered = {c.lower(): c for c in candidates}
    if word.lower() in lowered:
        return lowered[word.lower()]
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.8)
    return close[0] if close else None


@dataclass
class _Split:
    """One file's sections after the key policy: supported values, ignored keys, problems."""

    sections: dict[str, dict] = field(default_factory=dict)
    ignored: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _as_mapping(where: str, value: object, split: _Split) -> dict | None:
    if value is None:
        return {}
    if not isinstance(value, dict):
        split.problems.append(f"{where}: expected a mapping, got {type(value).__name__}")
        return None
    return value


def _split_keys(section: str, body: dict, split: _Split) -> None:
    """Keep the supported keys; a likely typo (or this trainer's own flag name, ``lr`` for
    ``learning_rate``) is a problem; anything else is ignored (see the module docstring)."""
    supported = _supported_keys(section)
    flag_names = {name: key for (s, key), name in FIELD_MAP.items() if s == section and name != key}
    kept: dict[str, Any] = {}
    for key, value in body.items():
        key = str(key)
        if key in supported:
            kept[key] = value
            continue
        near = None if key in KNOWN_UNSUPPORTED[section] else flag_names.get(key) or _near(key, supported)
        if near is None:
            split.ignored.setdefault(section, []).append(key)
        else:
            split.problems.append(f"{section}.{key}: unknown key; did you mean {near}?")
    split.sections[section] = kept


def _split_sections(root: dict) -> _Split:
    split = _Split()
    known = SUPPORTED_SECTIONS + IGNORED_SECTIONS
    for name, value in root.items():
        name = str(name)
        if name not in known:
            near = _near(name, known)
            hint = f"did you mean {near}?" if near else f"known sections: {', '.join(known)}"
            split.problems.append(f"{name}: unknown section; {hint}")
            continue
        body = _as_mapping(name, value, split)
        if body is None:
            continue
        if name in SUPPORTED_SECTIONS:
            _split_keys(name, body, split)
        else:
            split.ignored[name] = [str(k) for k in body]
    return split


def _root(doc: object) -> dict:
    """The sections: under ``training_config:`` (Kaito's layout) or at the top level."""
    if not isinstance(doc, dict):
        raise TrainingConfigError([f"expected a mapping of sections (under {ROOT_KEY}:), "
                                   f"got {type(doc).__name__ if doc is not None else 'an empty document'}"])
    if ROOT_KEY not in doc:
        return doc
    others = sorted(str(k) for k in doc if k != ROOT_KEY)
    if others:
        raise TrainingConfigError([f"unexpected top-level keys next to {ROOT_KEY}: {', '.join(others)}"])
    inner = doc[ROOT_KEY]
    if inner is None:
        return {}
    if not isinstance(inner, dict):
        raise TrainingConfigError([f"{ROOT_KEY}: expected a mapping of sections, got {type(inner).__name__}"])
    return inner


_BRIEF = reprlib.Repr()  # what a problem message shows of a bad value: a short, bounded sketch
_BRIEF.maxstring = _BRIEF.maxother = 60
_BRIEF.maxlist = _BRIEF.maxdict = 6
_BRIEF.maxlevel = 2
MAX_CONFIG_BYTES = 64 * 1024  # a training config is a few dozen lines; a ConfigMap may hold 1 MiB


def _pydantic_problems(exc: ValidationError) -> list[str]:
    by_alias = {"lora": "LoraConfig", "training": "TrainingArguments", "quantization": "QuantizationConfig"}
    out = []
    for err in exc.errors():
        loc = [by_alias.get(str(p), str(p)) for p in err["loc"]]
        msg = err["msg"].removeprefix("Value error, ")
        out.append(f"{'.'.join(loc)}: {msg} (got {_BRIEF.repr(err['input'])})")
    return out


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without anchors/aliases: a config needs none, and aliases let a few hundred
    bytes expand into a structure whose every printout is gigabytes ("billion laughs"); the
    controller parses these files from ConfigMaps that any namespace user can write."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not allowed in a training config",
                self.peek_event().start_mark)
        return super().compose_node(parent, index)


def parse_training_config(text: str) -> TrainingConfigFile:
    """Validate the text of a ``training_config.yaml``; every problem at once in TrainingConfigError."""
    if len(text.encode()) > MAX_CONFIG_BYTES:
        raise TrainingConfigError([f"{len(text.encode())} bytes; a training config may have at most "
                                   f"{MAX_CONFIG_BYTES}"])
    try:
        doc = yaml.load(text, Loader=_NoAliasLoader)
    except yaml.YAMLError as exc:
        raise TrainingConfigError([f"not valid YAML: {exc}"]) from None
    split = _split_sections(_root(doc))
    parsed: TrainingConfigFile | None = None
    try:
        parsed = TrainingConfigFile.model_validate({**split.sections, "ignored": split.ignored})
    except ValidationError as exc:
        split.problems += _pydantic_problems(exc)
    if split.problems or parsed is None:
        raise TrainingConfigError(split.problems)
    return parsed
