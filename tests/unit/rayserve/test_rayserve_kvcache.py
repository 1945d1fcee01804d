"""Batch surgery on KV caches and the coordinator's mask mirror stay in step."""

from __future__ import annotations

import torch

from rayserve.kvcache import BatchKVCache, MaskMirror, MergeFrom, Reset, Select, apply_ops, attention_bias
from rayserve.stage import split_layers


def _cache(rows: list[list[float]]) -> BatchKVCache:
    """One layer, one head, head_dim 1: values are the row's numbers (left-aligned as given)."""
    c = BatchKVCache()
    t = torch.tensor(rows, dtype=torch.float32).view(len(rows), 1, len(rows[0]), 1)
    c.update(t, t.clone(), layer_idx=3)
    return c


def test_update_appends_along_time():
    c = _cache([[1, 2]])
    k, _ = c.update(torch.full((1, 1, 1, 1), 9.0), torch.zeros(1, 1, 1, 1), layer_idx=3)
    assert k.view(-1).tolist() == [1, 2, 9] and c.length == 3 and c.batch == 1


def test_merge_left_pads_and_select_trims():
    caches = {"main": _cache([[1, 2, 3]]), "new": _cache([[7], [8]])}
    main = apply_ops(caches, "main", [MergeFrom("new")])
    assert "new" not in caches
    assert main.layers[3][0].view(3, 3).tolist() == [[1, 2, 3], [0, 0, 7], [0, 0, 8]]

    mirror, side = MaskMirror(), MaskMirror()
    mirror.extend(torch.ones(1, 3, dtype=torch.bool))
    side.extend(torch.ones(2, 1, dtype=torch.bool))
    mirror.merge(side)
    op = Select(rows=(1, 2), drop_left=2)  # the long row leaves: two pad columns go with it
    mirror.apply(op)
    apply_ops(caches, "main", [op])
    assert main.layers[3][0].view(2, 1).tolist() == [[7], [8]]
    assert mirror.mask.tolist() == [[True], [True]]
    apply_ops(caches, "main", [Reset()])
    assert main.length == 0


def test_positions_count_only_real_tokens():
    m = MaskMirror()
    _, pos = m.extend(torch.tensor([[False, True, True], [True, True, True]]))
    assert pos.tolist() == [[0, 0, 1], [0, 1, 2]]
    _, pos = m.extend(torch.ones(2, 1, dtype=torch.bool))
    assert pos.tolist() == [[2], [3]]


def test_attention_bias_is_causal_padding_aware_and_windowed():
    mask = torch.tensor([[False, True, True, True]])
    b = attention_bias(mask, q_len=2, dtype=torch.float32)
    allowed = (b == 0).view(2, 4).tolist()
    assert allowed == [[False, True, True, False], [False, True, True, True]]
    w = attention_bias(mask, q_len=1, dtype=torch.float32, sliding_window=2)
    assert (w == 0).view(4).tolist() == [False, False, True, True]


def test_split_layers_is_contiguous_and_balanced():
    assert split_layers(4, 2) == [(0, 2), (2, 4)]
    assert split_layers(5, 3) == [(0, 2), (2, 4), (4, 5)]
    assert split_layers(32, 1) == [(0, 32)]


def test_decode_steps_write_in_place_and_growth_keeps_the_history():
    """A decode step appends into spare columns (the buffer is not copied); when they run out
    the buffer grows once and every earlier token is still there, in order."""
    c = _cache([[1, 2, 3], [4, 5, 6]])
    buffer = c._kv[3].k.data_ptr()
    copies = 0
    for step in range(40):
        new = torch.full((2, 1, 1, 1), float(10 + step))
        k, _ = c.update(new, new.clone(), layer_idx=3)
        if c._kv[3].k.data_ptr() != buffer:
            copies, buffer = copies + 1, c._kv[3].k.data_ptr()
        assert k.shape == (2, 1, 3 + step + 1, 1)
    assert copies <= 2  # 40 steps, not 40 copies
    assert k[0].view(-1).tolist() == [1, 2, 3, *range(10, 50)]
    assert k[1].view(-1).tolist() == [4, 5, 6, *range(10, 50)]
    assert c.nbytes() >= c.nbytes(valid_only=True) == 2 * 2 * 43 * 4


def test_merge_pads_with_zeros_and_select_keeps_decoding():
    """The pad columns a merge creates are zeros, not whatever the new buffer held (a masked
    score over garbage could be NaN), and a selected batch decodes on from its buffer."""
    c, side = _cache([[1, 2, 3, 4]]), _cache([[7]])
    c._kv[3].k[:, :, 4:].fill_(float("nan"))  # spare columns may hold anything
    caches = {"main": c, "side": side}
    main = apply_ops(caches, "main", [MergeFrom("side")])
    assert main.layers[3][0].view(2, 4).tolist() == [[1, 2, 3, 4], [0, 0, 0, 7]]
    apply_ops(caches, "main", [Select(rows=(1,), drop_left=3)])
    k, _ = main.update(torch.full((1, 1, 1, 1), 8.0), torch.zeros(1, 1, 1, 1), layer_idx=3)
    assert k.view(-1).tolist() == [7, 8] and main.batch == 1 and main.length == 2
