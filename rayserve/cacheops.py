"""The operations on a batch's KV cache, as plain data.

Why apart from ``rayserve.kvcache``: the scheduler decides these ops (which rows stay, when a
prefilled group merges in, when the batch starts afresh) and must stay importable without
torch; the stages' caches and the coordinator's mask mirror then apply the same ops.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Select:
    """Keep ``rows`` (in that order) and drop the first ``drop_left`` time columns."""

    rows: tuple[int, ...]
    drop_left: int = 0


@dataclass(frozen=True)
class MergeFrom:
    """Append the rows of cache ``source`` below this one, left-padding to a common length."""

    source: str


@dataclass(frozen=True)
class Reset:
    """Forget everything (the batch is empty or a fresh prefill starts)."""


CacheOp = Select | MergeFrom | Reset
