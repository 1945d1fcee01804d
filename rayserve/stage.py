"""One pipeline stage: a contiguous slice of a decoder-only model's layers plus its KV caches.

Why: a model too big for one GPU is split by layers (pipeline parallelism). Stage 0 owns the
token embedding, the last stage owns the final norm and LM head, every stage owns its
layers' KV cache, and only hidden states (``[batch, new_tokens, hidden]``) travel between
stages. With one stage this is simply the whole model, so the unsharded path and the sharded
path run the same code and the same arithmetic.

It works for the Llama-style layout transformers uses for Phi-3, Llama, Mistral, Qwen and
Granite: ``model.model.{embed_tokens, layers, norm, rotary_emb}`` and ``model.lm_head``, and for
the few decoders that name the same parts differently (``DecoderLayout``). Which architectures
are proven to decode exactly through it: presets/catalog.yaml's ``architectures``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import torch
from torch import nn

from rayserve.kvcache import BatchKVCache, CacheOp, apply_ops, attention_bias


@dataclass(frozen=True)
class DecoderLayout:
    """Where a causal LM keeps the parts a stage drives, and how its layers take the cache.

    Why data and not a subclass per model: the forward is the same for every decoder-only model
    that transformers builds as embedding -> layers -> norm -> head with one rotary embedding;
    only the attribute names differ (Falcon: ``transformer.{word_embeddings, h, ln_f}``, its
    layers take the cache as ``layer_past`` and an ``alibi`` argument).
    """

    core: str = "model"  # a dotted path for a text model inside a multimodal one
    embed: str = "embed_tokens"
    layers: str = "layers"
    norm: str = "norm"
    cache_kwarg: str = "past_key_values"
    extra_kwargs: tuple[tuple[str, object], ...] = ()
    unused: tuple[str, ...] = ()  # submodules a text-only engine never runs (a vision tower)
    # config attributes a model's own forward applies around the modules (Granite's scalars)
    embed_multiplier: str | None = None
    logits_divisor: str | None = None

    def prefix(self, part: str) -> str:
        return f"{self.core}.{getattr(self, part)}."

    def core_of(self, model: nn.Module) -> nn.Module:
        return model.get_submodule(self.core)


LAYOUTS: dict[str, DecoderLayout] = {
    "falcon": DecoderLayout(
        core="transformer", embed="word_embeddings", layers="h", norm="ln_f", cache_kwarg="layer_past",
        extra_kwargs=(("alibi", None),),
    ),
    # Granite scales the embeddings up and the logits down outside any module
    "granite": DecoderLayout(embed_multiplier="embedding_multiplier", logits_divisor="logits_scaling"),
    # Gemma 3's multimodal checkpoints (the 4B and 27B): the text model serves, the vision
    # tower and its projector are never read
    "gemma3": DecoderLayout(
        core="model.language_model", unused=("model.vision_tower", "model.multi_modal_projector")
    ),
    # Ministral 3 / Mistral Small 4 / Medium 3.5: the same shape around a Mistral text model
    "mistral3": DecoderLayout(
        core="model.language_model", unused=("model.vision_tower", "model.multi_modal_projector")
    ),
}


def layout_of(model: nn.Module) -> DecoderLayout:
    """The layout of ``model`` (by its config's ``model_type``; Llama-style by default)."""
    return LAYOUTS.get(getattr(model.config, "model_type", ""), DecoderLayout())


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    layout = layout_of(model)
    return getattr(layout.core_of(model), layout.layers)


def layer_type_names(config) -> list[str]:
    """Each layer's attention type (``config.layer_types``; all "full_attention" without one)."""
    config = config.get_text_config()
    return list(getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers)


def layer_windows(config) -> list[int | None]:
    """Each layer's sliding window, or None where it attends to every earlier token.

    Why per layer: Gemma 3 and gpt-oss mix local (windowed) and global layers, named by
    ``config.layer_types``; a config without that list (Mistral's) windows every layer when it
    has a ``sliding_window``. A config that lists types but leaves a window unused (Qwen2 with
    ``use_sliding_window: false`` marks every layer full) gets no window at all.
    """
    config = config.get_text_config()
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if not types:
        return [window] * config.num_hidden_layers
    return [window if t == "sliding_attention" else None for t in types]


def split_layers(num_layers: int, stages: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, end)`` layer ranges, as even as possible, earlier stages larger.

    >>> split_layers(5, 2)
    [(0, 3), (3, 5)]
    """
    if stages < 1 or stages > num_layers:
        raise ValueError(f"cannot split {num_layers} layers into {stages} stages")
    base, extra = divmod(num_layers, stages)
    out, start = [], 0
    for i in range(stages):
        end = start + base + (1 if i < extra else 0)
        out.append((start, end))
        start = end
    return out


def dropped_prefixes(
    num_layers: int, start: int, end: int, layout: DecoderLayout = DecoderLayout()
) -> tuple[str, ...]:
    """State-dict name prefixes of the parts stage ``[start, end)`` does not hold.

    Why a name rule next to the pruning: the partial loader
    (``rayserve.loading.load_stage_model``) must read exactly the tensors that
    ``PipelineStage(prune=True)`` keeps, and it has to decide that from names, before any
    weight is in memory. Both follow the same rule: other stages' layers go, the embedding
    stays on the first stage only, the final norm and LM head on the last only.

    >>> dropped_prefixes(4, 2, 4)
    ('model.layers.0.', 'model.layers.1.', 'model.embed_tokens.')
    """
    out = [f"{layout.prefix('layers')}{i}." for i in range(num_layers) if not start <= i < end]
    if start > 0:
        out.append(layout.prefix("embed"))
    if end < num_layers:
        out += [layout.prefix("norm"), "lm_head."]
    out += [f"{name}." for name in layout.unused]
    return tuple(out)


def meta_tensors(model: nn.Module) -> list[str]:
    """Names of parameters and buffers that have no data (still on the meta device)."""
    named = chain(model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False))
    return [name for name, t in named if t.is_meta]


@dataclass
class StageInput:
    """What one forward of one stage needs; built by the coordinator, identical for all stages
    except ``x`` (token ids for stage 0, hidden states after)."""

    mask: torch.Tensor  # [batch, time] bool, time includes the new tokens
    positions: torch.Tensor  # [batch, new] long
    cache_key: str
    ops: Sequence[CacheOp] = ()
    adapter_names: Sequence[str] | None = None  # per row; None = no adapters loaded
    last_only: bool = True


class PipelineStage:
    """Layers ``[start, end)`` of ``model`` on ``device``; see module docstring.

    With ``prune`` the other layers (and the embedding / head a middle stage does not
    need) are dropped so a stage actor holds only its share of the weights; what remains
    must be real tensors (a partially loaded model leaves the dropped parts on the meta
    device, see ``dropped_prefixes``), which is checked here so a loader bug fails with names
    instead of torch's "Cannot copy out of meta tensor".
    """

    def __init__(self, model: nn.Module, start: int, end: int, device: torch.device, prune: bool = False):
        self.layout = lay = layout_of(model)
        core = lay.core_of(model)
        layers = getattr(core, lay.layers)
        n = len(layers)
        self.model, self.start, self.end, self.device = model, start, end, device
        self.is_first, self.is_last = start == 0, end == n
        self.caches: dict[str, BatchKVCache] = {}
        if prune:
            setattr(core, lay.layers, nn.ModuleList(layers[start:end]))
            if not self.is_first:
                setattr(core, lay.embed, None)
            if not self.is_last:
                setattr(core, lay.norm, None)
                model.lm_head = None
            for name in lay.unused:
                owner, _, leaf = name.rpartition(".")
                setattr(model.get_submodule(owner), leaf, None)
            self.layers = list(getattr(core, lay.layers))
            if missing := meta_tensors(model):
                raise RuntimeError(f"stage [{start}, {end}) has tensors without data: {missing}")
        else:
            self.layers = list(layers[start:end])
        self.embed = getattr(core, lay.embed) if self.is_first else None
        self.norm = getattr(core, lay.norm) if self.is_last else None
        self.lm_head = model.lm_head if self.is_last else None
        self.rotary = core.rotary_emb
        self.dtype = next(model.parameters()).dtype
        text = model.config.get_text_config()
        self.embed_multiplier = getattr(text, lay.embed_multiplier) if lay.embed_multiplier else None
        self.logits_divisor = getattr(text, lay.logits_divisor) if lay.logits_divisor else None
        self.windows = layer_windows(model.config)[start:end]
        self.rotary_per_type = "layer_type" in inspect.signature(self.rotary.forward).parameters
        self.layer_types = layer_type_names(model.config)[start:end]
        model.to(device)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, inp: StageInput) -> torch.Tensor:
        """Run this stage. Returns hidden states (inner stages, on CPU for transport) or
        float32 logits of the last position (``[batch, vocab]``) from the last stage."""
        from rayserve.adapters import adapter_rows

        cache = apply_ops(self.caches, inp.cache_key, inp.ops)
        if self.is_first:
            h = self.embed(x.to(self.device))
            if self.embed_multiplier is not None:
                h = h * self.embed_multiplier
        else:
            h = x.to(self.device, self.dtype)
        positions = inp.positions.to(self.device)
        q_len = h.shape[1]
        biases = {
            w: attention_bias(inp.mask, q_len, self.dtype, w).to(self.device) for w in set(self.windows)
        }
        if self.rotary_per_type:  # Gemma: local and global layers rotate with different bases
            rotations = {t: self.rotary(h, positions, t) for t in set(self.layer_types)}
        else:
            rotations = dict.fromkeys(set(self.layer_types), self.rotary(h, positions))
        kwargs = {self.layout.cache_kwarg: cache, **dict(self.layout.extra_kwargs)}
        with adapter_rows(self.layers, inp.adapter_names):
            for layer, window, kind in zip(self.layers, self.windows, self.layer_types, strict=True):
                out = layer(
                    h,
                    attention_mask=biases[window],
                    position_ids=positions,
                    use_cache=True,
                    position_embeddings=rotations[kind],
                    **kwargs,
                )
                h = out[0] if isinstance(out, tuple) else out
        if not self.is_last:
            return h if h.device.type == "cpu" else h.cpu()
        if inp.last_only:
            h = h[:, -1:]
        logits = self.lm_head(self.norm(h))
        if self.logits_divisor is not None:
            logits = logits / self.logits_divisor
        logits = logits.float()
        return (logits[:, -1] if inp.last_only else logits).cpu()

    def drop(self, key: str) -> None:
        self.caches.pop(key, None)

    def cache_bytes(self, valid_only: bool = False) -> int:
        """KV cache bytes allocated (or, with ``valid_only``, of cached tokens only)."""
        return sum(c.nbytes(valid_only) for c in self.caches.values())
