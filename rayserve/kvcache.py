"""A batched KV cache that sequences can join and leave between decode steps.

Why our own cache: continuous batching needs three operations that transformers' caches do
not offer across versions: *merge* a freshly prefilled group of sequences into the running
batch (left-padding the shorter one), *select* the rows that are still running, and *trim*
leading columns that became padding in every row. Each pipeline stage owns one of these per
batch (keyed by name) for its own layers only; the coordinator mirrors the same operations
on a ``[batch, time]`` attention mask so both stay in step without shipping KV around.

The object duck-types the only method HF attention layers call on ``past_key_values``:
``update(key, value, layer_idx, cache_kwargs) -> (all_keys, all_values)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rayserve.cacheops import CacheOp, MergeFrom, Reset, Select

# the ops live in rayserve.cacheops (torch-free, for the scheduler); re-exported for the stages
__all__ = [
    "BatchKVCache",
    "CacheOp",
    "MaskMirror",
    "MergeFrom",
    "Reset",
    "Select",
    "apply_ops",
    "attention_bias",
]


class BatchKVCache:
    """Per-layer ``[batch, kv_heads, time, head_dim]`` keys and values for one batch."""

    def __init__(self) -> None:
        self.layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    # --- the HF Cache protocol we rely on --------------------------------------------------
    def update(
        self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, cache_kwargs: dict | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        old = self.layers.get(layer_idx)
        if old is not None:
            key = torch.cat([old[0], key], dim=-2)
            value = torch.cat([old[1], value], dim=-2)
        self.layers[layer_idx] = (key, value)
        return key, value

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    # --- batch surgery ----------------------------------------------------------------------
    @property
    def length(self) -> int:
        for k, _ in self.layers.values():
            return int(k.shape[-2])
        return 0

    @property
    def batch(self) -> int:
        for k, _ in self.layers.values():
            return int(k.shape[0])
        return 0

    def select(self, op: Select) -> None:
        if not op.rows:
            self.layers.clear()
            return
        for idx, (k, v) in self.layers.items():
            rows = torch.tensor(op.rows, device=k.device)
            self.layers[idx] = (
                k.index_select(0, rows)[:, :, op.drop_left :].contiguous(),
                v.index_select(0, rows)[:, :, op.drop_left :].contiguous(),
            )

    def merge(self, other: BatchKVCache) -> None:
        if not other.layers:
            return
        if not self.layers:
            self.layers = dict(other.layers)
            return
        t = max(self.length, other.length)
        for idx in self.layers:
            a_k, a_v = self.layers[idx]
            b_k, b_v = other.layers[idx]
            self.layers[idx] = (
                torch.cat([_left_pad(a_k, t), _left_pad(b_k, t)], dim=0),
                torch.cat([_left_pad(a_v, t), _left_pad(b_v, t)], dim=0),
            )

    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() * 2 for k, _ in self.layers.values())


def _left_pad(x: torch.Tensor, length: int, dim: int = -2) -> torch.Tensor:
    missing = length - x.shape[dim]
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim=dim)


def apply_ops(caches: dict[str, BatchKVCache], key: str, ops: Sequence[CacheOp]) -> BatchKVCache:
    """Apply ``ops`` to ``caches[key]`` (creating it) and return it; merges consume the source."""
    cache = caches.setdefault(key, BatchKVCache())
    for op in ops:
        if isinstance(op, Reset):
            cache.layers.clear()
        elif isinstance(op, Select):
            cache.select(op)
        elif isinstance(op, MergeFrom):
            cache.merge(caches.pop(op.source, BatchKVCache()))
        else:  # pragma: no cover - exhaustive
            raise TypeError(f"unknown cache op {op!r}")
    return cache


class MaskMirror:
    """The coordinator's copy of one batch's ``[batch, time]`` validity mask.

    It applies the same ops as the stages' caches (``rayserve.scheduler`` decides them) so row
    order and padding agree, and it derives what every forward needs: the mask including new
    tokens and the position ids.
    """

    def __init__(self) -> None:
        self.mask = torch.zeros(0, 0, dtype=torch.bool)

    @property
    def batch(self) -> int:
        return int(self.mask.shape[0])

    def reset(self) -> None:
        self.mask = torch.zeros(0, 0, dtype=torch.bool)

    def apply(self, op: Select | Reset) -> None:
        """Follow a row selection the scheduler decided (the stages' caches get the same op)."""
        if isinstance(op, Reset) or not op.rows:
            self.reset()
            return
        kept = self.mask[list(op.rows)]
        assert not kept[:, : op.drop_left].any(), f"{op} trims columns that a kept row still uses"
        self.mask = kept[:, op.drop_left :]

    def merge(self, other: MaskMirror) -> None:
        if other.batch == 0:
            return
        if self.batch == 0:
            self.mask = other.mask
            return
        t = max(self.mask.shape[1], other.mask.shape[1])
        self.mask = torch.cat([_left_pad(self.mask, t, dim=1), _left_pad(other.mask, t, dim=1)], dim=0)

    def extend(self, new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``new`` (``[batch, n]`` bool) columns; return (full mask, positions of new)."""
        self.mask = torch.cat([self.mask, new], dim=1) if self.mask.numel() else new
        positions = (self.mask.long().cumsum(dim=1) - 1).clamp(min=0)
        return self.mask, positions[:, -new.shape[1] :]


def attention_bias(
    mask: torch.Tensor, q_len: int, dtype: torch.dtype, sliding_window: int | None = None
) -> torch.Tensor:
    """Additive ``[batch, 1, q_len, time]`` bias: causal, padding-aware, optional sliding window.

    Query ``i`` sits at column ``time - q_len + i``. A fully masked row (a padding query)
    gets the dtype's min everywhere, which softmax turns into a harmless uniform row.
    """
    b, t = mask.shape
    q_cols = torch.arange(t - q_len, t).view(q_len, 1)
    k_cols = torch.arange(t).view(1, t)
    allowed = k_cols <= q_cols
    if sliding_window:
        allowed = allowed & (q_cols - k_cols < sliding_window)
    allowed = allowed.view(1, 1, q_len, t) & mask.view(b, 1, 1, t)
    bias = torch.zeros(b, 1, q_len, t, dtype=dtype)
    return bias.masked_fill_(~allowed, torch.finfo(dtype).min)
