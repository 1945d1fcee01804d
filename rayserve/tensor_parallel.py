"""Megatron-style tensor parallelism for the decoder layers of one pipeline stage.

Why our own and not transformers' ``tp_plan="auto"``: in transformers 5.23 the Phi-3 plan
(``Phi3Config.base_model_tp_plan``) is ``colwise_gather_output`` for the packed ``qkv_proj``
and ``gate_up_proj`` and ``rowwise_split_input`` for ``o_proj``/``down_proj``: it cuts the
packed projection into contiguous column blocks (a block mixes query and key columns, not
heads) and gathers the full output on every rank, so every rank runs attention over all
heads and its KV cache holds all of them. It also needs the whole model built by
``from_pretrained`` under ``torchrun``'s environment, not our partial stage loader. Here the
split follows heads: rank ``r`` of ``world`` keeps query heads ``[r*H/w, (r+1)*H/w)`` and the
matching key/value heads (so its ``BatchKVCache`` holds only those), and MLP columns
``[r*I/w, (r+1)*I/w)``; ``o_proj`` and ``down_proj`` keep the matching input columns and
all-reduce their partial sums. Two all-reduces per layer, the arithmetic of the unsharded
model up to float summation order.

LoRA adapters (peft's ``lora.Linear`` around a projection) split with their projection: a
column-parallel one keeps its whole ``A`` and the matching output rows of ``B``; a row-parallel
one keeps the matching input columns of ``A`` and its whole ``B``, and the all-reduce comes
after the adapter's delta is added, so it sums the ranks' deltas with their base parts (``B`` is
linear: ``B(sum of A-parts) = sum of B(A-part)``). DoRA and adapters on the embedding or the
LM head are refused: their norms and tables do not split this way.

Layouts: Phi-3's packed ``qkv_proj`` / ``gate_up_proj``, and the Llama / Mistral / Qwen
split ``q_proj k_proj v_proj`` / ``gate_proj up_proj``. Attention reads its head counts from
``config`` (Phi-3 slices ``qkv`` with ``config.num_attention_heads``), so each sharded
attention gets a shallow copy of the config with the local counts.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


def backend_for(device: torch.device) -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if device.type == "cuda" else "gloo"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now, for a group's rendezvous (rank 0 listens on it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def init_group(rank: int, world: int, address: str, port: int, device: torch.device) -> None:
    """Join this process to its stage's tensor-parallel group (the default process group).

    Why the default group: a process holds exactly one stage's rank, so one group per process
    is all there is; every stage of a replica gets its own ``port``.
    """
    if dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", address)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend_for(device),
        init_method=f"tcp://{address}:{port}",
        rank=rank,
        world_size=world,
        device_id=device if device.type == "cuda" else None,
    )


class RowParallel(nn.Module):
    """A linear layer holding some input columns; the all-reduce sums the ranks' parts.

    Why a wrapper and not a new Linear: the sliced ``nn.Linear`` stays as ``.linear``, so its
    weight is an ordinary parameter and memory accounting sees it.
    """

    def __init__(self, linear: nn.Linear, group=None) -> None:
        super().__init__()
        self.linear, self.group = linear, group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        dist.all_reduce(out, group=self.group)
        return out


def _rows(linear: nn.Linear, blocks: Iterable[tuple[int, int]]) -> nn.Linear:
    """A linear layer with only the output rows ``blocks`` of ``linear`` (column parallel)."""
    weight = torch.cat([linear.weight[a:b] for a, b in blocks]).contiguous()
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None, device=weight.device)
    out.weight = nn.Parameter(weight, requires_grad=False)
    if linear.bias is not None:
        out.bias = nn.Parameter(torch.cat([linear.bias[a:b] for a, b in blocks]).contiguous(), False)
    return out.to(weight.dtype)


def _cols(linear: nn.Linear, start: int, end: int, group) -> nn.Linear:
    """The input columns ``[start, end)`` of ``linear``, not reduced; the bias is kept on rank 0
    only (the all-reduce after it adds every rank's part, so one bias is counted once)."""
    out = _in_cols(linear, start, end)
    if linear.bias is not None and dist.get_rank(group) == 0:
        out.bias = nn.Parameter(linear.bias.detach().clone(), False)
    return out


def _in_cols(linear: nn.Linear, start: int, end: int) -> nn.Linear:
    """A linear layer with only the input columns ``[start, end)`` of ``linear``'s weight, no bias
    (a LoRA ``A`` as it is; ``_cols`` adds a projection's bias)."""
    weight = linear.weight[:, start:end].contiguous()
    out = nn.Linear(end - start, weight.shape[0], bias=False, device=weight.device).to(weight.dtype)
    out.weight = nn.Parameter(weight, requires_grad=False)
    return out


def _is_lora(module: nn.Module) -> bool:
    """peft's LoRA wrapper around a linear layer (``base_layer`` + ``lora_A``/``lora_B``)."""
    return hasattr(module, "base_layer") and hasattr(module, "lora_A") and hasattr(module, "lora_B")


def _check_lora(module: nn.Module, row_parallel: bool) -> None:
    if any(getattr(module, "use_dora", {}).values()):
        raise NotImplementedError("DoRA adapters with tensor parallelism are not supported")
    if row_parallel and any(b.bias is not None for b in module.lora_B.values()):
        # each rank would add the bias once and the all-reduce would sum it world times
        raise NotImplementedError("LoRA bias (lora_bias) on o_proj/down_proj with tensor parallelism")


def column_parallel(module: nn.Module, blocks: Iterable[tuple[int, int]]) -> nn.Module:
    """The output rows ``blocks`` of a projection (or of a LoRA-wrapped one: ``B`` split alike)."""
    blocks = list(blocks)
    if not _is_lora(module):
        return _rows(module, blocks)
    _check_lora(module, row_parallel=False)
    module.base_layer = _rows(module.base_layer, blocks)
    for name in list(module.lora_B):
        module.lora_B[name] = _rows(module.lora_B[name], blocks)
    module.out_features = module.base_layer.out_features
    return module


def row_parallel(module: nn.Module, start: int, end: int, group) -> RowParallel:
    """The input columns ``[start, end)`` of a projection, all-reduced after (a LoRA-wrapped one
    keeps ``A``'s matching columns and is all-reduced with its delta added)."""
    if not _is_lora(module):
        return RowParallel(_cols(module, start, end, group), group)
    _check_lora(module, row_parallel=True)
    module.base_layer = _cols(module.base_layer, start, end, group)
    for name in list(module.lora_A):
        module.lora_A[name] = _in_cols(module.lora_A[name], start, end)
    module.in_features = end - start
    return RowParallel(module, group)


def _share(n: int, rank: int, world: int, what: str) -> tuple[int, int]:
    if n % world:
        raise ValueError(f"{what} ({n}) do not split evenly over tensor parallel {world}")
    per = n // world
    return rank * per, (rank + 1) * per


def shard_attention(attn: nn.Module, rank: int, world: int, group=None) -> None:
    """Keep this rank's query heads and their key/value heads; see module docstring."""
    cfg = attn.config
    heads, kv, d = cfg.num_attention_heads, cfg.num_key_value_heads, attn.head_dim
    qa, qb = _share(heads, rank, world, "attention heads")
    ka, kb = _share(kv, rank, world, "key/value heads")
    if hasattr(attn, "qkv_proj"):
        q_end, k_end = heads * d, heads * d + kv * d
        blocks = [(qa * d, qb * d), (q_end + ka * d, q_end + kb * d), (k_end + ka * d, k_end + kb * d)]
        attn.qkv_proj = column_parallel(attn.qkv_proj, blocks)
    else:
        attn.q_proj = column_parallel(attn.q_proj, [(qa * d, qb * d)])
        attn.k_proj = column_parallel(attn.k_proj, [(ka * d, kb * d)])
        attn.v_proj = column_parallel(attn.v_proj, [(ka * d, kb * d)])
    attn.o_proj = row_parallel(attn.o_proj, qa * d, qb * d, group)
    local = copy.copy(cfg)
    local.num_attention_heads, local.num_key_value_heads = qb - qa, kb - ka
    attn.config = local
    if hasattr(attn, "num_key_value_heads"):
        attn.num_key_value_heads = kb - ka
    if hasattr(attn, "num_heads"):
        attn.num_heads = qb - qa


def shard_mlp(mlp: nn.Module, rank: int, world: int, group=None) -> None:
    """Keep this rank's intermediate columns of the gated MLP; ``down_proj`` all-reduces."""
    if hasattr(mlp, "gate_up_proj"):
        inter = mlp.gate_up_proj.weight.shape[0] // 2
        a, b = _share(inter, rank, world, "MLP columns")
        mlp.gate_up_proj = column_parallel(mlp.gate_up_proj, [(a, b), (inter + a, inter + b)])
    else:
        inter = mlp.gate_proj.weight.shape[0]
        a, b = _share(inter, rank, world, "MLP columns")
        mlp.gate_proj = column_parallel(mlp.gate_proj, [(a, b)])
        mlp.up_proj = column_parallel(mlp.up_proj, [(a, b)])
    mlp.down_proj = row_parallel(mlp.down_proj, a, b, group)


class VocabParallelEmbedding(nn.Module):
    """Rows ``[start, end)`` of the token embedding; ids outside them give zeros, and the
    all-reduce fills in every rank's rows."""

    def __init__(self, emb: nn.Embedding, rank: int, world: int, group=None) -> None:
        super().__init__()
        self.start, self.end = _share(emb.num_embeddings, rank, world, "vocabulary rows")
        self.weight = nn.Parameter(emb.weight[self.start : self.end].detach().clone(), requires_grad=False)
        self.group = group

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        local = (ids >= self.start) & (ids < self.end)
        out = nn.functional.embedding((ids - self.start).clamp(0, self.end - self.start - 1), self.weight)
        out = out.masked_fill(~local.unsqueeze(-1), 0)
        dist.all_reduce(out, group=self.group)
        return out


class VocabParallelHead(nn.Module):
    """The LM head's vocabulary rows ``[start, end)``; an all-gather gives every rank whole
    logits, so sampling stays rank-local and the leader's answer is the model's."""

    def __init__(self, head: nn.Linear, rank: int, world: int, group=None) -> None:
        super().__init__()
        a, b = _share(head.out_features, rank, world, "vocabulary rows")
        self.linear, self.world, self.group = _rows(head, [(a, b)]), world, group

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        part = self.linear(h).contiguous()
        parts = [torch.empty_like(part) for _ in range(self.world)]
        dist.all_gather(parts, part, group=self.group)
        return torch.cat(parts, dim=-1)


def shard_ends(model: nn.Module, first: bool, last: bool, rank: int, world: int, group=None) -> None:
    """Split the embedding (first stage) and LM head (last stage) by vocabulary rows.

    Why: Phi-3-mini's two 32064 x 3072 tables are 197M of its 3.8B parameters, and in a small
    model most of them; left whole on every rank they keep the first and last stages' ranks
    well above half of their stage. A tied head is split like an untied one (the tie is lost,
    not the values). A vocabulary that does not split evenly leaves both whole on every rank.
    """
    vocab = model.config.vocab_size
    ends = [model.model.embed_tokens if first else None, model.lm_head if last else None]
    if world > 1 and any(m is not None and _is_lora(m) for m in ends):
        raise NotImplementedError("LoRA adapters on the embedding or LM head with tensor parallelism")
    if world == 1 or vocab % world:
        if world > 1:
            log.warning(
                "vocabulary %d does not split over %d ranks: embedding and LM head stay whole", vocab, world
            )
        return
    if first:
        model.model.embed_tokens = VocabParallelEmbedding(model.model.embed_tokens, rank, world, group)
    if last:
        model.lm_head = VocabParallelHead(model.lm_head, rank, world, group)


def shard_layers(layers: Iterable[nn.Module], rank: int, world: int, group=None) -> None:
    """Shard every decoder layer's attention and MLP in place for ``rank`` of ``world``.

    Norms stay whole (replicated): they are tiny. The embedding and the LM head are split by
    ``shard_ends``.
    """
    if world == 1:
        return
    for layer in layers:
        shard_attention(layer.self_attn, rank, world, group)
        shard_mlp(layer.mlp, rank, world, group)


def param_bytes(module: nn.Module) -> int:
    """Bytes of the parameters ``module`` holds (each shared tensor once)."""
    return sum(p.numel() * p.element_size() for p in module.parameters())
