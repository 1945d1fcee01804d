"""Load a causal LM, its tokenizer and LoRA adapters from a ``ModelSpec``.

Why one place: every process that holds weights (the Serve replica when unsharded, each
pipeline-stage actor when sharded, the tuning job, the benchmark's baseline) must load the
same way - same dtype rule, same attention implementation, same adapter scaling - or the
sharded output stops matching the unsharded one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from rayserve.spec import AdapterSpec, ModelSpec
from rayserve.stage import decoder_layers, dropped_prefixes, layout_of

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_META_COPY_WARNING = r".*copying from a non-meta parameter .* to a meta parameter"


def pick_device(gpus: float | None = None, index: int = 0) -> torch.device:
    """CUDA when this process was given a GPU (or any is visible and ``gpus`` is None).

    ``index`` counts among the GPUs Ray assigned this process (``ray.get_gpu_ids()``, mapped
    to a local CUDA index by ``ray_gpu_index``), or among the visible ones outside Ray; never
    the node's first GPU by default. A tensor-parallel rank is one actor with one GPU (index 0
    = its own); a process given several uses ``index`` to pick one per rank.
    """
    if torch.cuda.is_available() and (gpus is None or gpus > 0):
        local = ray_gpu_index(index, _ray_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES"))
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"device {local} asked for, {torch.cuda.device_count()} visible")
        return torch.device("cuda", local)
    return torch.device("cpu")


def ray_gpu_index(index: int, assigned: list[str], visible: str | None) -> int:
    """The local CUDA index of the ``index``-th GPU Ray assigned this process.

    Ray normally narrows ``CUDA_VISIBLE_DEVICES`` to the assigned GPUs, so the i-th assigned
    one is at the position of its id in that list (``cuda:i`` when Ray set it). With
    ``RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES`` every GPU stays visible and the id itself
    is the index. Outside Ray (``assigned`` empty) it is ``index`` among the visible devices.

    >>> ray_gpu_index(0, ["3"], "3"), ray_gpu_index(1, ["2", "5"], "0,2,5"), ray_gpu_index(0, ["6"], None)
    (0, 2, 6)
    """
    if not assigned:
        return index
    gpu = str(assigned[index])
    return visible.split(",").index(gpu) if visible else int(gpu)


def _ray_gpu_ids() -> list[str]:
    """GPUs Ray assigned to this worker; empty outside a Ray worker (or without Ray)."""
    try:
        import ray
    except ImportError:
        return []
    return [str(g) for g in ray.get_gpu_ids()] if ray.is_initialized() else []


def resolve_dtype(spec: ModelSpec, device: torch.device) -> torch.dtype:
    """'auto' is bfloat16 on GPU (Phi-3's training dtype) and float32 on CPU (fast, exact)."""
    if spec.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[spec.dtype]


def load_tokenizer(spec: ModelSpec):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec.path, revision=spec.revision,
                                        trust_remote_code=spec.trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    spec: ModelSpec,
    device: torch.device | None = None,
    adapters: Sequence[AdapterSpec] = (),
    move: bool = True,
):
    """Return the causal LM in eval mode, in the dtype meant for ``device``, with ``adapters``
    injected (not merged).

    ``move=False`` leaves the weights on CPU so a pipeline stage can drop the layers it does
    not own before moving the rest onto its GPU: ``load_stage_model``'s fallback for
    checkpoints without safetensors (otherwise it reads only the stage's share). With
    adapters, the returned module is the base model whose linear layers peft wrapped; rows
    of a batch choose their adapter at forward time (see ``rayserve.adapters``).
    """
    device = device or pick_device()
    dtype = resolve_dtype(spec, device)
    config, _ = load_config(spec)
    model = auto_class(config).from_pretrained(
        spec.path,
        revision=spec.revision,
        dtype=dtype,
        attn_implementation=attention_implementation(spec, config),
        trust_remote_code=spec.trust_remote_code,
    )
    model = _finish(model, adapters)
    return model.to(device) if move else model


def _finish(model: nn.Module, adapters: Sequence[AdapterSpec]) -> nn.Module:
    """Inject ``adapters`` and freeze: the same last steps for a full and a partial load.

    After a partial load the layers of other stages are still on the meta device; peft gives
    them LoRA weights on meta too, and copying the adapter's values into those is a no-op
    that torch warns about once per tensor. They are pruned right after, so that is muted.
    """
    if adapters:
        from rayserve.adapters import attach_adapters

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_META_COPY_WARNING)
            model = attach_adapters(model, adapters)
    model.eval()
    model.requires_grad_(False)
    return model


def load_stage_model(
    spec: ModelSpec,
    start: int,
    end: int,
    device: torch.device,
    adapters: Sequence[AdapterSpec] = (),
) -> nn.Module:
    """The model with only the weights stage ``[start, end)`` holds; for ``PipelineStage(prune=True)``.

    Why: loading the whole checkpoint in every stage actor needs the full model in host RAM
    N times over (impossible for a 70B model on one node) and reads it N times. Here the
    model is built with its parameters on the meta device (no memory), and only the tensors
    the stage keeps (``rayserve.stage.dropped_prefixes``) are read from the safetensors
    files, straight onto ``device``, one by one. The rest stays on meta until the stage
    prunes it. Module names and ``layer_idx`` stay those of the full model, so checkpoint
    keys, adapter keys and KV-cache indices need no remapping and the result is what the
    full load + prune gave. Tensors transformers converts at load (fused experts, FP8 / MXFP4
    blocks) go through its own conversions, still only the stage's (``load_stage_converted``).
    Checkpoints without safetensors fall back to the full load.
    """
    weights = safetensors_weight_map(spec.path, spec.revision)
    if weights is None:
        log.warning("%s has no safetensors: stage [%d, %d) loads the whole model", spec.path, start, end)
        return load_model(spec, device, adapters, move=False)
    model = _skeleton(spec, resolve_dtype(spec, device))
    # quantized weights come with scales only transformers' quantizer applies: read as plain
    # tensors they would load without error and decode garbage
    quantized = getattr(model.config, "quantization_config", None) is not None
    renamed = None if quantized else checkpoint_renames(model, list(weights))
    if renamed is None:  # fused experts, quantized blocks: transformers' own conversions, stage keys only
        model, read = load_stage_converted(spec, start, end, device, weights)
        log.info("stage [%d, %d) of %s: read %d of %d tensors through transformers' conversions",
                 start, end, spec.name, len(read), len(weights))
        return _finish(model, adapters)
    needed = _stage_tensors(model, start, end)
    _load_tensors(model, needed, {renamed[k]: f for k, f in weights.items()}, device,
                  {new: old for old, new in renamed.items()})
    log.info("stage [%d, %d) of %s: read %d of %d tensors", start, end, spec.name, len(needed), len(weights))
    return _finish(model, adapters)


def load_stage_converted(
    spec: ModelSpec, start: int, end: int, device: torch.device, weights: dict[str, Path]
) -> tuple[nn.Module, list[str]]:
    """Stage ``[start, end)`` of a checkpoint whose tensors transformers converts at load, reading
    only the checkpoint tensors that become the stage's parameters; returns the model (other
    stages' parts on meta, as ``load_stage_model``) and the checkpoint keys read.

    Why transformers' loader and not our own stacking: a MoE checkpoint stores one tensor per
    expert (``mlp.experts.7.gate_proj.weight``) that transformers 5 fuses into one parameter
    (``mlp.experts.gate_up_proj``: the experts stacked, gate and up concatenated), and FP8 /
    MXFP4 checkpoints store blocks and scales its quantizer turns into quantized modules (or,
    on a GPU that cannot run them, dequantizes). Its conversion table
    (``conversion_mapping.get_model_conversion_mapping``) is the architecture's own record of
    that layout, so the stage gets exactly what ``from_pretrained`` builds, with the quantizer's
    modules. What changes is the input: the state dict handed to
    ``convert_and_load_state_dict_in_model`` holds only the keys whose converted name is one of
    the stage's parameters (lazy safetensors slices, read when converted), not the whole
    checkpoint; nothing is initialised for the rest, which stays on meta until the stage prunes.
    """
    from safetensors import safe_open
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import (
        WeightRenaming,
        convert_and_load_state_dict_in_model,
        rename_source_key,
    )
    from transformers.modeling_utils import LoadStateDictConfig
    from transformers.quantizers.auto import get_hf_quantizer

    config, _ = load_config(spec)
    dtype = resolve_dtype(spec, device)
    device_map = {"": device}
    quantizer, config, device_map = get_hf_quantizer(config, None, device_map, True, {})
    if quantizer is not None:
        dtype = quantizer.update_dtype(dtype)
    model = _skeleton(spec, dtype, config=config, quantizer=quantizer, device_map=device_map,
                      files=sorted({str(f) for f in weights.values()}))
    needed = _stage_tensors(model, start, end)
    mapping = get_model_conversion_mapping(model, None, quantizer)
    renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
    converters = [m for m in mapping if not isinstance(m, WeightRenaming)]
    meta_state, prefix = model.state_dict(), model.base_model_prefix
    read = [key for key in weights
            if rename_source_key(key, renamings, converters, prefix, meta_state)[0] in needed]
    load = LoadStateDictConfig(pretrained_model_name_or_path=spec.path, device_map=device_map, dtype=dtype,
                               dtype_plan=model._get_dtype_plan(dtype), hf_quantizer=quantizer,
                               weight_mapping=mapping)
    with contextlib.ExitStack() as files:
        handles = {f: files.enter_context(safe_open(f, framework="pt", device="cpu"))
                   for f in {weights[k] for k in read}}
        state = {key: handles[weights[key]].get_slice(key) for key in read}
        info, _ = convert_and_load_state_dict_in_model(model, state, load)
    if errors := info.conversion_errors or info.mismatched_keys or info.error_msgs:
        raise ValueError(f"checkpoint {spec.path}: stage [{start}, {end}) failed to convert: {errors}")
    for target, source in _tied_pairs(model, needed).items():
        _set_tensor(model, target, model.get_parameter(source))
    if missing := sorted(name for name in needed if model.get_parameter_or_buffer(name).is_meta):
        raise KeyError(f"checkpoint {spec.path} lacks tensors the stage needs: {missing}")
    if quantizer is not None:
        model.hf_quantizer = quantizer
        quantizer.postprocess_model(model)
    return model, read


def safetensors_weight_map(path: str, revision: str | None = None) -> dict[str, Path] | None:
    """Tensor name -> safetensors file holding it, for a sharded (index json) or single-file
    checkpoint (a hub id's at ``revision``); None when the checkpoint has no safetensors (e.g.
    ``pytorch_model.bin``)."""
    from safetensors import safe_open

    root = _checkpoint_dir(path, revision)
    if root is None:
        return None
    index = root / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: root / file for name, file in weight_map.items()}
    single = root / "model.safetensors"
    if single.is_file():
        with safe_open(single, framework="pt") as f:
            return dict.fromkeys(f.keys(), single)
    return None


def _checkpoint_dir(path: str, revision: str | None = None) -> Path | None:
    """The local directory of ``path``: itself, or the hub cache's snapshot of a hub id at
    ``revision`` (the preset's pinned commit; None: main)."""
    if Path(path).is_dir():
        return Path(path)
    try:
        return Path(_download_checkpoint(path, revision))
    except Exception as e:  # not a hub id, or offline without a cached copy: let the full load say why
        log.info("no local checkpoint directory for %s: %s", path, e)
        return None


def _download_checkpoint(repo: str, revision: str | None = None) -> str:
    """Snapshot the config files and only the safetensors files the model uses.

    ``*.safetensors`` would also fetch alternative copies some repositories carry (Mistral's
    ``consolidated.safetensors`` beside the sharded files doubles the download); the index's
    ``weight_map`` names the files that matter, and a repo without an index has one file.
    """
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        index = hf_hub_download(repo, "model.safetensors.index.json", revision=revision)
        files = sorted(set(json.loads(Path(index).read_text())["weight_map"].values()))
    except EntryNotFoundError:
        files = ["model.safetensors"]
    return snapshot_download(repo, revision=revision, allow_patterns=["*.json", *files])


def _skeleton(spec: ModelSpec, dtype: torch.dtype, *, config=None, quantizer=None, device_map=None,
              files: list[str] | None = None) -> nn.Module:
    """The full model from its config, parameters on meta, in ``dtype`` like ``load_model``;
    with ``quantizer`` its modules replaced by the quantized ones (as ``from_pretrained`` does)."""
    from accelerate import init_empty_weights

    config = config if config is not None else load_config(spec)[0]
    # parameters on meta (no memory; the checkpoint fills them), buffers for real: non-persistent
    # ones computed at init (rotary inv_freq) are not in the checkpoint. The patch accelerate
    # applies is process-wide while it lasts; a stage actor builds its model before serving.
    with init_empty_weights(include_buffers=False):
        model = auto_class(config).from_config(
            config,
            dtype=dtype,
            attn_implementation=attention_implementation(spec, config),
            trust_remote_code=spec.trust_remote_code,
        )
        if quantizer is not None:
            quantizer.preprocess_model(model=model, dtype=dtype, device_map=device_map,
                                       checkpoint_files=files, use_kernels=False)
    return model


def _stage_tensors(model: nn.Module, start: int, end: int) -> dict[str, torch.Tensor]:
    """Name -> (meta) tensor of every parameter and persistent buffer the stage keeps."""
    dropped = dropped_prefixes(len(decoder_layers(model)), start, end, layout_of(model))
    named = dict(model.named_parameters(remove_duplicate=False))
    for name, buf in model.named_buffers(remove_duplicate=False):
        owner, _, leaf = name.rpartition(".")
        if leaf not in model.get_submodule(owner)._non_persistent_buffers_set:
            named[name] = buf
    return {name: t for name, t in named.items() if not name.startswith(dropped)}


def checkpoint_renames(model: nn.Module, keys: list[str]) -> dict[str, str] | None:
    """Checkpoint key -> the model's name for it, as transformers renames keys on load (hub
    checkpoints of multimodal models keep ``language_model.model.*``, which transformers 5
    names ``model.language_model.*``); None when some key needs more than a rename (experts
    fused into one tensor, quantized blocks), which only transformers' own loader does.

    Why transformers' tables: they are the architecture's own record of its checkpoint
    formats, so the partial loader reads what ``from_pretrained`` would, no per-model list.
    """
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightRenaming, rename_source_key

    transforms = get_model_conversion_mapping(model, add_legacy=True)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if not isinstance(t, WeightRenaming)]
    out = {}
    for key in keys:
        new, converted = rename_source_key(key, renamings, converters)
        if converted is not None:
            return None
        out[key] = new
    return out


def _load_tensors(
    model: nn.Module,
    needed: dict[str, torch.Tensor],
    weights: dict[str, Path],
    device: torch.device,
    keys: dict[str, str] | None = None,
) -> None:
    """Read every ``needed`` tensor from its file onto ``device`` in the skeleton's dtype.

    Tied weights (``tie_word_embeddings``) are read under whichever name the checkpoint has
    and, when the stage holds both ends, tied again. A tensor the checkpoint lacks fails the
    load with its name: a stage with a randomly initialised weight would serve garbage.
    ``weights`` is keyed by the model's names; ``keys`` maps those the checkpoint spells
    differently back to its keys (``checkpoint_renames``).
    """
    keys = keys or {}
    tied = _tied_pairs(model, needed)
    sources = {name: _checkpoint_key(model, name, weights) for name in needed if name not in tied}
    if missing := sorted(name for name, key in sources.items() if key is None):
        where = next(iter(weights.values())).parent
        raise KeyError(f"checkpoint {where} lacks tensors the stage needs: {missing}")
    by_file: dict[Path, list[str]] = defaultdict(list)
    for name, key in sources.items():
        by_file[weights[key]].append(name)
    for file, names in by_file.items():
        wanted = {name: keys.get(sources[name], sources[name]) for name in names}
        _read_file(model, file, wanted, needed, device)
    for target, source in tied.items():
        _set_tensor(model, target, model.get_parameter(source))


def _tied_pairs(model: nn.Module, needed: dict[str, torch.Tensor]) -> dict[str, str]:
    """Tied {target: source} pairs whose both ends this stage holds (read once, shared)."""
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    return {t: s for t, s in tied.items() if t in needed and s in needed}


def _checkpoint_key(model: nn.Module, name: str, weights: dict[str, Path]) -> str | None:
    """The checkpoint's key for ``name``: itself, or its tied partner's (a tied checkpoint
    stores the embedding once, yet the last stage needs it as ``lm_head.weight``)."""
    if name in weights:
        return name
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    partners = [tied.get(name), *(t for t, s in tied.items() if s == name)]
    return next((p for p in partners if p in weights), None)


def _read_file(
    model: nn.Module,
    file: Path,
    keys: dict[str, str],
    needed: dict[str, torch.Tensor],
    device: torch.device,
) -> None:
    """Read ``keys`` (model name -> checkpoint key) of one file, one tensor at a time."""
    from safetensors import safe_open

    with safe_open(file, framework="pt", device=str(device)) as f:
        for name, key in keys.items():
            like = needed[name]
            value = f.get_tensor(key)
            if value.shape != like.shape:
                got, want = tuple(value.shape), tuple(like.shape)
                raise ValueError(f"{file}: {key} has shape {got}, the model wants {want}")
            if value.is_floating_point():
                value = value.to(like.dtype)
            _set_tensor(model, name, value)


def _set_tensor(model: nn.Module, name: str, value: torch.Tensor) -> None:
    """Put ``value`` in place of the parameter or buffer ``name`` (replacing, not copying)."""
    owner_name, _, leaf = name.rpartition(".")
    owner = model.get_submodule(owner_name)
    if leaf in owner._parameters:
        owner._parameters[leaf] = value if isinstance(value, nn.Parameter) else nn.Parameter(value, False)
    else:
        owner._buffers[leaf] = value


def auto_class(config):
    """AutoModelForCausalLM, or AutoModelForImageTextToText for a multimodal checkpoint that
    transformers does not list as a causal LM (Mistral 3): the engine serves its text model."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING or not hasattr(config, "text_config"):
        return AutoModelForCausalLM
    return AutoModelForImageTextToText


def attention_implementation(spec: ModelSpec, config) -> str:
    """The spec's choice, or eager when the model class has no SDPA path (gpt-oss: its attention
    sinks are an extra softmax column that only the eager kernel adds)."""
    try:
        cls = auto_class(config)._model_mapping[type(config)]
    except KeyError:  # remote code: let transformers decide with the spec's choice
        return spec.attn_implementation
    return spec.attn_implementation if getattr(cls, "_supports_sdpa", True) else "eager"


def load_config(spec: ModelSpec):
    """The model's config and generation config (None when absent), without the weights."""
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(spec.path, revision=spec.revision,
                                        trust_remote_code=spec.trust_remote_code)
    try:
        gen = GenerationConfig.from_pretrained(spec.path, revision=spec.revision)
    except OSError:
        gen = None
    return config, gen


def eos_token_ids(config, generation_config, tokenizer) -> set[int]:
    """All ids that end a generation: generation_config's (Phi-3 lists <|end|> too), the
    config's and the tokenizer's."""
    ids: set[int] = set()
    for src in (generation_config, config):
        eos = getattr(src, "eos_token_id", None) if src is not None else None
        if isinstance(eos, int):
            ids.add(eos)
        elif eos:
            ids.update(int(e) for e in eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def context_limit(spec: ModelSpec, config) -> int:
    """The smaller of what the spec allows and what the model's positions support."""
    limit = spec.max_context
    max_pos = getattr(config.get_text_config(), "max_position_embeddings", None)  # multimodal: its text model
    return min(limit, max_pos) if max_pos else limit
