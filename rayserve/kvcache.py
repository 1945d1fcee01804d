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


class _LayerKV:
    """One layer's keys and values: ``[batch, kv_heads, capacity, head_dim]`` buffers of which
    the first ``length`` time columns are valid."""

    __slots__ = ("k", "length", "v")

    def __init__(self, k: torch.Tensor, v: torch.Tensor, length: int) -> None:
        self.k, self.v, self.length = k, v, length

    @property
    def capacity(self) -> int:
        return int(self.k.shape[-2])

    def valid(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k[:, :, : self.length], self.v[:, :, : self.length]


def _capacity(needed: int) -> int:
    """Time columns to allocate for ``needed``: an eighth more (at least 16), so a decode step
    writes in place and a buffer is copied once per ~needed/8 steps instead of every step;
    the overshoot stays within an eighth of the cache."""
    return needed + max(16, needed // 8)


def _buffer_like(x: torch.Tensor, batch: int, capacity: int, zeros: bool = False) -> torch.Tensor:
    shape = (batch, x.shape[1], capacity, x.shape[3])
    return x.new_zeros(shape) if zeros else x.new_empty(shape)


class BatchKVCache:
    """Per-layer ``[batch, kv_heads, time, head_dim]`` keys and values for one batch.

    Why preallocated buffers and not ``torch.cat`` per step: appending by concatenation copies a
    layer's whole cache on every decode step (O(time) per token, O(time^2) per sequence, and
    twice the memory traffic of the attention that reads it). Each layer keeps a buffer with
    spare time columns; a step writes its new keys in place and the layers see a view of the
    valid columns. Batch surgery (``select``, ``merge``) still copies, but it runs only when a
    sequence leaves or a group joins.
    """

    def __init__(self) -> None:
        self._kv: dict[int, _LayerKV] = {}

    # --- the HF Cache protocol we rely on --------------------------------------------------
    def update(
        self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, cache_kwargs: dict | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = key.shape[-2]
        entry = self._kv.get(layer_idx)
        if entry is None:
            cap = _capacity(n)
            entry = self._kv[layer_idx] = _LayerKV(
                _buffer_like(key, key.shape[0], cap), _buffer_like(value, value.shape[0], cap), 0
            )
        elif entry.length + n > entry.capacity:
            cap = _capacity(entry.length + n)
            k, v = _buffer_like(entry.k, entry.k.shape[0], cap), _buffer_like(entry.v, entry.v.shape[0], cap)
            k[:, :, : entry.length].copy_(entry.k[:, :, : entry.length])
            v[:, :, : entry.length].copy_(entry.v[:, :, : entry.length])
            entry.k, entry.v = k, v
        end = entry.length + n
        entry.k[:, :, entry.length : end].copy_(key)
        entry.v[:, :, entry.length : end].copy_(value)
        entry.length = end
        return entry.valid()

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    # --- batch surgery ----------------------------------------------------------------------
    @property
    def layers(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's valid keys and values (views into the buffers)."""
        return {idx: e.valid() for idx, e in self._kv.items()}

    @property
    def length(self) -> int:
        for e in self._kv.values():
            return e.length
        return 0

    @property
    def batch(self) -> int:
        for e in self._kv.values():
            return int(e.k.shape[0])
        return 0

    def clear(self) -> None:
        self._kv.clear()

    def select(self, op: Select) -> None:
        if not op.rows:
            self._kv.clear()
            return
        for e in self._kv.values():
            rows = torch.tensor(op.rows, device=e.k.device)
            length = e.length - op.drop_left
            cap = _capacity(length)
            k, v = _buffer_like(e.k, len(op.rows), cap), _buffer_like(e.v, len(op.rows), cap)
            k[:, :, :length].copy_(e.k[:, :, op.drop_left : e.length].index_select(0, rows))
            v[:, :, :length].copy_(e.v[:, :, op.drop_left : e.length].index_select(0, rows))
            e.k, e.v, e.length = k, v, length

    def merge(self, other: BatchKVCache) -> None:
        """Append ``other``'s rows below ours, left-padding the shorter batch with zeros (the
        mask hides the pad columns; zeros, not garbage, so a masked score is never NaN)."""
        if not other._kv:
            return
        if not self._kv:
            self._kv = dict(other._kv)
            return
        t = max(self.length, other.length)
        cap = _capacity(t)
        for idx, a in self._kv.items():
            b = other._kv[idx]
            rows_a = a.k.shape[0]
            rows = rows_a + b.k.shape[0]
            k, v = _buffer_like(a.k, rows, cap, zeros=True), _buffer_like(a.v, rows, cap, zeros=True)
            k[:rows_a, :, t - a.length : t].copy_(a.k[:, :, : a.length])
            v[:rows_a, :, t - a.length : t].copy_(a.v[:, :, : a.length])
            k[rows_a:, :, t - b.length : t].copy_(b.k[:, :, : b.length])
            v[rows_a:, :, t - b.length : t].copy_(b.v[:, :, : b.length])
            a.k, a.v, a.length = k, v, t

    def nbytes(self, valid_only: bool = False) -> int:
        """Bytes the buffers hold, spare columns included (what the device has allocated), or
        with ``valid_only`` those of the cached tokens alone (which, unlike the spare columns,
        do not depend on how the batch grew)."""
        kv = (x for e in self._kv.values() for x in (e.valid() if valid_only else (e.k, e.v)))
        return sum(x.numel() * x.element_size() for x in kv)


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
            cache.clear()
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
