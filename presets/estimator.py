"""How many GPU nodes of a SKU a preset needs, and how one model replica is laid out on them.

The arithmetic, which ``NodeEstimate.message`` spells out for the workspace status:

1. usable memory per GPU = GPU memory x 0.9 (the rest is CUDA context, allocator slack);
2. GPUs needed = ceil(preset GPU memory / usable per GPU);
3. tensor parallel (tp) = 1 for a one-GPU model, else the largest size <= GPUs per node that divides the
   attention and KV heads (1 if the preset cannot split a layer, or the engine's splitter cannot split
   its architecture's: the catalog's ``architectures[].tensor_parallel``);
4. pipeline parallel (pp) = ceil(GPUs needed / tp): stages of layers, placed ``GPUs per node // tp`` to a
   node; nodes = ceil(pp / stages per node);
5. more than one node needs a preset that may be distributed; tuning is single-node; a workspace spans at
   most MAX_NODES nodes; ``resource.count`` may ask for more nodes (extra nodes hold more replicas);
6. quantized weights (FP8, MXFP4, ...) need a GPU generation that runs the format (the catalog's
   ``quantizations``); their size is the checkpoint's, already at the quantized width.

What the catalog adds beyond dense models: a mixture-of-experts model keeps all its experts in
memory (``weights_gib`` is every expert, whatever ``experts.active`` is), an MLA model (DeepSeek V3)
caches one latent per layer and token instead of keys and values per head, and a sliding-window
layer attends to its window only (``kv_bytes_per_token`` counts what the engine's cache holds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from presets.registry import Catalog, GpuSku, Preset, _num, default_catalog

GPU_MEMORY_UTILIZATION = 0.9
MAX_NODES = 8
MAX_SUGGESTIONS = 3


@dataclass(frozen=True)
class NodeEstimate:
    node_count: int
    gpus_per_node: int
    gpus_needed: int  # GPUs of memory one replica needs
    tensor_parallel: int
    pipeline_parallel: int
    replicas: int  # model replicas that fit on node_count nodes
    needed_gib: float
    usable_gib_per_gpu: float
    message: str
    max_context: int | None = None  # tokens one request may use (inference); None for tuning
    kv_budget_tokens: int | None = None  # KV cache room of one replica, rows x tokens (inference)

    @property
    def gpus_per_replica(self) -> int:
        """GPUs one replica occupies (its placement-group bundles): tp x pp."""
        return self.tensor_parallel * self.pipeline_parallel


@dataclass
class EstimateError(ValueError):
    """The preset cannot run on the SKU; ``message`` says why and ``suggestions`` name SKUs that fit."""

    message: str
    suggestions: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message


def usable_gib_per_gpu(sku: GpuSku) -> float:
    return round(sku.gpu_memory_gib * GPU_MEMORY_UTILIZATION, 2)


DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
CONTEXT_STEP = 256  # a capped context is rounded down to a multiple of this


def kv_bytes_per_token(preset: Preset, dtype: str) -> int | None:
    """KV cache bytes of one token over all layers: 2 x layers x KV heads x head_dim x dtype.

    MLA (``kv_lora_rank``): one latent of kv_lora_rank + qk_rope_head_dim values per layer, shared
    by all heads, as an MLA-aware cache holds it (DeepSeek V3: 61 x 576 x 2 = 70 KiB, not 2 x 61 x
    128 x 192 x 2 = 5.7 MiB). Sliding-window layers are counted in full: the engine's cache keeps
    every token of a row (the mask hides what lies outside the window), so that is what it holds.
    """
    if preset.head_dim is None:
        return None
    if preset.kv_lora_rank is not None:
        return preset.num_layers * (preset.kv_lora_rank + (preset.qk_rope_head_dim or 0)) * DTYPE_BYTES[dtype]
    return 2 * preset.num_layers * preset.num_kv_heads * preset.head_dim * DTYPE_BYTES[dtype]


def _native(quant, sku: GpuSku) -> bool:
    """Whether the serving image runs ``quant`` at its stored width on ``sku``'s GPUs."""
    return sku.fake or (quant.native_in_image and float(sku.cuda_compute) >= float(quant.min_cuda_compute))


BF16_BYTES = 2


def dequantized_gib(preset: Preset, sku: GpuSku, catalog: Catalog) -> float:
    """Extra GPU memory when ``sku`` runs ``preset``'s weights dequantized (transformers does it at
    load where it cannot run the format): the model at 2 bytes a parameter, less the checkpoint
    already counted (FP8: about one more copy; MXFP4's 4.25-bit experts: about three)."""
    quant = catalog.quantizations.get(preset.quantization or "")
    if quant is None or _native(quant, sku) or quant.older_gpus != "dequantize":
        return 0.0
    return round(max(0.0, preset.params_b * 1e9 * BF16_BYTES / 2**30 - preset.weights_gib), 2)


def quantization_problem(preset: Preset, sku: GpuSku, catalog: Catalog) -> str | None:
    """Why ``sku``'s GPUs cannot run ``preset``'s quantized weights, or None: a format with no
    fallback below its compute capability, or dequantized weights on a GPU without bfloat16."""
    quant = catalog.quantizations.get(preset.quantization or "")
    if quant is None or _native(quant, sku):
        return None
    if quant.older_gpus == "dequantize":
        floor = quant.dequantized_min_cuda_compute
        if floor is None or float(sku.cuda_compute) >= float(floor):
            return None
        return (
            f"{preset.name} ships {quant.name} weights, which this engine runs dequantized to bfloat16: "
            f"that needs GPUs of CUDA compute capability {floor} or newer; {sku.name}'s {sku.gpu_model} "
            f"is {sku.cuda_compute}"
        )
    return (
        f"{preset.name} ships {quant.name} weights, which need GPUs of CUDA compute capability "
        f"{quant.min_cuda_compute} or newer; {sku.name}'s {sku.gpu_model} is {sku.cuda_compute}"
    )


def _host_memory_problem(
    preset: Preset, sku: GpuSku, pp: int, stages_per_node: int, catalog: Catalog | None
) -> str | None:
    """Each pipeline stage reads only its share of the checkpoint (``rayserve.loading``: plain
    tensors straight to its GPU; converted ones, fused experts and quantized blocks, through
    host memory on their way): refuse a node whose host memory cannot hold the shares of the
    stages it runs, which are a 1/pp slice each (dequantized weights counted at their bf16 size)."""
    catalog = catalog or default_catalog()
    if sku.fake:
        return None
    stages = min(pp, stages_per_node)
    whole = preset.weights_gib + dequantized_gib(preset, sku, catalog)
    share = whole * stages / pp
    if share <= sku.memory_gib:
        return None
    return (
        f"its {stages} stage{'s' if stages > 1 else ''} on a node read {stages}/{pp} of the "
        f"{_num(round(whole, 2))} GiB checkpoint, {_num(round(share, 2))} GiB: more than the "
        f"{_num(sku.memory_gib)} GiB of host memory of {sku.name}"
    )


def _fits(preset: Preset, sku: GpuSku, catalog: Catalog | None) -> bool:
    try:
        estimate_nodes(preset, sku, catalog=catalog)
    except EstimateError:
        return False
    return True


def kv_room_tokens(preset: Preset, dtype: str, replica_gib: float) -> int | None:
    """Tokens of KV cache that fit in what one replica's usable GPU memory holds beyond the
    weights (summed over the batch: rows x length); None when the preset lacks head_dim."""
    per_token = kv_bytes_per_token(preset, dtype)
    if per_token is None:
        return None
    return int(max(0.0, replica_gib - preset.weights_gib) * 2**30 // per_token)


def served_context(preset: Preset, dtype: str, replica_gib: float, batches: int = 1) -> tuple[int, str]:
    """The context one request may use, and why when it is below the model's limit.

    Whatever one replica's usable GPU memory holds beyond the weights is room for the KV cache.
    A 128k-token model on one 16 GiB GPU would otherwise accept a prompt whose KV cache alone
    is many times the GPU (and die with an out-of-memory error mid-request). A pipeline replica
    keeps ``batches`` batches in flight (one per stage), each with its own cache, and the engine
    always lets one sequence run in each: one request may use one batch's share.
    """
    per_token = kv_bytes_per_token(preset, dtype)
    room = kv_room_tokens(preset, dtype, replica_gib)
    if per_token is None or room is None:
        return preset.max_context, ""
    fits = room // max(1, batches)
    if fits >= preset.max_context:
        return preset.max_context, ""
    capped = fits // CONTEXT_STEP * CONTEXT_STEP if fits >= CONTEXT_STEP else max(1, fits)
    room_gib = max(0.0, replica_gib - preset.weights_gib)
    split = f", shared by {batches} batches in flight" if batches > 1 else ""
    return capped, (
        f"; KV cache {_num(round(per_token / 1024, 1))} KiB per token, {_num(round(room_gib, 2))} GiB left "
        f"after the weights{split} -> context capped at {capped} of the model's {preset.max_context} tokens"
    )


def effective_dtype(preset: Preset, sku: GpuSku) -> str:
    """bfloat16 weights run as float16 on GPUs older than Ampere (same size)."""
    return "float16" if preset.dtype == "bfloat16" and not sku.supports_bfloat16 else preset.dtype


def _tensor_parallel(preset: Preset, gpus_needed: int, gpus_per_node: int, catalog: Catalog) -> int:
    arch = catalog.architecture(preset.architecture)
    splits = preset.layout.tensor_parallel and (arch is None or arch.tensor_parallel)
    if gpus_needed == 1 or not splits:
        return 1
    heads, kv = preset.num_attention_heads, preset.num_kv_heads
    return max(d for d in range(1, gpus_per_node + 1) if heads % d == 0 and (kv % d == 0 or d % kv == 0))


def skus_that_fit(needed_gib: float, catalog: Catalog | None = None) -> list[GpuSku]:
    """Real SKUs whose single node holds ``needed_gib``, smallest first."""
    catalog = catalog or default_catalog()
    return [s for s in catalog.real_skus() if s.gpu_count * usable_gib_per_gpu(s) >= needed_gib]


def _suggest(needed_gib: float, catalog: Catalog | None) -> list[str]:
    return [s.name for s in skus_that_fit(needed_gib, catalog)[:MAX_SUGGESTIONS]]


def _fmt_suggestions(names: list[str], catalog: Catalog | None) -> str:
    catalog = catalog or default_catalog()
    parts = []
    for name in names:
        sku = catalog.sku(name)
        parts.append(f"{name} ({sku.describe()})" if sku else name)
    return ", ".join(parts)


def estimate_nodes(
    preset: Preset,
    sku: GpuSku,
    requested_count: int = 1,
    *,
    tuning_method: str | None = None,
    catalog: Catalog | None = None,
) -> NodeEstimate:
    """Nodes of ``sku`` for ``preset`` (inference, or tuning with ``tuning_method`` lora/qlora).

    Raises EstimateError, with an explanation and suggested SKUs, when it cannot fit.
    """
    if tuning_method is not None:
        if preset.tuning is None:
            raise EstimateError(f"preset {preset.name} does not support tuning")
        needed = preset.tuning.gpu_memory_gib(tuning_method)
        what = f"{tuning_method.lower()} tuning of {preset.name}"
    else:
        needed = preset.gpu_memory_gib
        what = preset.name
        catalog = catalog or default_catalog()
        if problem := quantization_problem(preset, sku, catalog):
            newer = [s.name for s in skus_that_fit(needed, catalog)
                     if quantization_problem(preset, s, catalog) is None][:MAX_SUGGESTIONS]
            hint = f". Use e.g. {_fmt_suggestions(newer, catalog)}" if newer else ""
            raise EstimateError(problem + hint, newer)
        if extra := dequantized_gib(preset, sku, catalog):
            needed = round(needed + extra, 2)
            what += f" ({preset.quantization} weights dequantized to bf16 on {sku.gpu_model})"
    usable = usable_gib_per_gpu(sku)
    gpn = sku.gpu_count
    gpus_needed = max(1, math.ceil(needed / usable - 1e-9))
    tp = _tensor_parallel(preset, gpus_needed, gpn, catalog or default_catalog())
    pp = math.ceil(gpus_needed / tp)
    nodes = math.ceil(pp / (gpn // tp))
    dtype = effective_dtype(preset, sku)
    head = (
        f"{what} needs {_num(needed)} GiB of GPU memory at {dtype}; {sku.name} has {sku.describe()} "
        f"per node, {_num(usable)} GiB usable per GPU ({GPU_MEMORY_UTILIZATION:.0%})"
    )
    node_total = _num(round(gpn * usable, 2))

    single_node_only = tuning_method is not None or not preset.layout.distributed
    if nodes > 1 and single_node_only:
        why = "tuning runs on a single node" if tuning_method else "it cannot be split across nodes"
        suggestions = _suggest(needed, catalog)
        raise EstimateError(
            f"{head}, so {node_total} GiB per node, but {why}. Use an instance type with at least "
            f"{_num(needed)} GiB of usable GPU memory per node, "
            f"e.g. {_fmt_suggestions(suggestions, catalog)}",
            suggestions,
        )
    if pp > preset.num_layers:
        raise EstimateError(
            f"{head} -> {pp} pipeline stages, more than its {preset.num_layers} layers",
            _suggest(needed, catalog),
        )
    if nodes > MAX_NODES:
        suggestions = _suggest(needed, catalog) or _suggest(needed / MAX_NODES, catalog)
        raise EstimateError(
            f"{head} -> {gpus_needed} GPUs -> {nodes} nodes, more than the {MAX_NODES} a workspace may span. "
            f"Use a larger instance type, e.g. {_fmt_suggestions(suggestions, catalog)}",
            suggestions,
        )

    if tuning_method is None and (problem := _host_memory_problem(preset, sku, pp, gpn // tp, catalog)):
        working = [s.name for s in (catalog or default_catalog()).real_skus()
                   if s.memory_gib > sku.memory_gib and _fits(preset, s, catalog)][:MAX_SUGGESTIONS]
        hint = f". Use an instance type with more host memory, e.g. {_fmt_suggestions(working, catalog)}"
        raise EstimateError(f"{head} -> {pp} pipeline stage{'s' if pp > 1 else ''}; {problem}"
                            f"{hint if working else ''}", working)
    plural = "s" if gpus_needed > 1 else ""
    message = f"{head} -> {gpus_needed} GPU{plural} -> {nodes} node{'s' if nodes > 1 else ''}"
    if tp * pp > 1:
        message += f" (tensor parallel {tp} x pipeline parallel {pp})"
    final = nodes
    if requested_count > nodes:
        final = requested_count
        message += f"; resource.count asks for {requested_count} -> {final} nodes"
    replicas = (final * gpn) // (tp * pp)
    if replicas > 1:
        message += f", room for {replicas} replicas"
    max_context = kv_budget = None
    if tuning_method is None:
        # the engine keeps one batch per pipeline stage in flight (rayserve EngineSpec.microbatches)
        # dequantized weights take their bf16 size out of the room for the KV cache
        room = tp * pp * usable - dequantized_gib(preset, sku, catalog or default_catalog())
        max_context, note = served_context(preset, dtype, room, batches=pp)
        kv_budget = kv_room_tokens(preset, dtype, room)
        message += note
    return NodeEstimate(
        node_count=final,
        gpus_per_node=gpn,
        gpus_needed=gpus_needed,
        tensor_parallel=tp,
        pipeline_parallel=pp,
        replicas=replicas,
        needed_gib=needed,
        usable_gib_per_gpu=usable,
        message=message,
        max_context=max_context,
        kv_budget_tokens=kv_budget,
    )


def estimate_for(
    preset_name: str,
    instance_type: str,
    requested_count: int = 1,
    *,
    tuning_method: str | None = None,
    catalog: Catalog | None = None,
) -> NodeEstimate:
    """``estimate_nodes`` by names; an unknown preset or SKU is an EstimateError naming close matches."""
    catalog = catalog or default_catalog()
    preset = catalog.preset(preset_name)
    if preset is None:
        similar = catalog.similar_presets(preset_name)
        raise EstimateError(unknown_preset_message(preset_name, catalog), similar)
    sku = catalog.sku(instance_type)
    if sku is None:
        raise EstimateError(unknown_sku_message(instance_type, catalog), catalog.similar_skus(instance_type))
    return estimate_nodes(preset, sku, requested_count, tuning_method=tuning_method, catalog=catalog)


def unknown_preset_message(name: str, catalog: Catalog | None = None) -> str:
    catalog = catalog or default_catalog()
    similar = catalog.similar_presets(name)
    hint = f"Did you mean {' or '.join(similar)}? " if similar else ""
    # the catalog's Hugging Face ids (Kaito's model catalog) would triple the list: name them by count
    short = sorted(p for p in catalog.presets if "/" not in p)
    by_id = len(catalog.presets) - len(short)
    more = f", or one of the {by_id} Hugging Face ids in presets/catalog.yaml" if by_id else ""
    return f"unknown preset {name!r}. {hint}Supported presets: {', '.join(short)}{more}"


def unknown_sku_message(name: str, catalog: Catalog | None = None) -> str:
    catalog = catalog or default_catalog()
    similar = catalog.similar_skus(name)
    hint = f"Did you mean {' or '.join(similar)}? " if similar else ""
    return f"unknown instance type {name!r}. {hint}Supported instance types: {', '.join(catalog.skus)}"
