"""Per-request sampling over a batch of last-position logits.

Why per row: rows of one continuous batch come from different requests with different
temperature / top-k / top-p / seeds. Greedy rows are an argmax; sampled rows get their own
``torch.Generator`` so a request with a ``seed`` is reproducible whatever it is batched with.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import torch

from rayserve.params import SamplingParams

# SamplingParams lives in rayserve.params (torch-free); re-exported for existing callers
__all__ = ["RowSampler", "SamplingParams", "pick_tokens", "token_logprobs"]


class RowSampler:
    """Sampling state of one sequence (its generator, if any)."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.generator: torch.Generator | None = None
        if not params.greedy:
            self.generator = torch.Generator()
            # not torch.seed(): that would reseed the process-wide generator as a side effect
            self.generator.manual_seed(params.seed if params.seed is not None else secrets.randbits(63))

    def pick(self, logits: torch.Tensor, history: Sequence[int], eos_blocked: Sequence[int]) -> int:
        p = self.params
        logits = logits.clone()
        if eos_blocked:
            logits[list(eos_blocked)] = -float("inf")
        if p.repetition_penalty != 1.0 and history:
            idx = torch.tensor(sorted(set(history)))
            vals = logits[idx]
            logits[idx] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
        if p.greedy:
            return int(logits.argmax())
        logits = logits / p.temperature
        if p.top_k:
            kth = torch.topk(logits, min(p.top_k, logits.numel())).values[-1]
            logits[logits < kth] = -float("inf")
        probs = torch.softmax(logits, dim=-1)
        if p.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            cum = sorted_probs.cumsum(0)
            drop = cum - sorted_probs > p.top_p  # keep the smallest prefix reaching top_p
            sorted_probs[drop] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=self.generator))


def pick_tokens(
    logits: torch.Tensor,
    samplers: Sequence[RowSampler],
    histories: Sequence[Sequence[int]],
    eos_ids: Sequence[int],
) -> list[int]:
    """One token per row of ``logits`` (``[batch, vocab]``); fast path when all rows are greedy
    with no penalties and nothing blocked."""
    simple = all(
        s.params.greedy and s.params.repetition_penalty == 1.0 and len(h) >= s.params.min_new_tokens
        for s, h in zip(samplers, histories, strict=True)
    )
    if simple:
        return logits.argmax(dim=-1).tolist()
    out = []
    for row, (s, h) in enumerate(zip(samplers, histories, strict=True)):
        blocked = eos_ids if len(h) < s.params.min_new_tokens and not s.params.ignore_eos else ()
        out.append(s.pick(logits[row], h, blocked))
    return out


def token_logprobs(
    logits: torch.Tensor, tokens: Sequence[int], wanted: Sequence[int | None]
) -> list[tuple[float | None, tuple[tuple[int, float], ...]]]:
    """Per row: the chosen token's log probability and the top ``wanted[row]`` alternatives,
    or ``(None, ())`` for a row that did not ask. Under the model's own distribution (the raw
    logits, before temperature or penalties), as vLLM reports them by default. Only the
    asking rows pay for the softmax."""
    out: list[tuple[float | None, tuple[tuple[int, float], ...]]] = [(None, ())] * len(tokens)
    rows = [i for i, k in enumerate(wanted) if k is not None]
    if not rows:
        return out
    lp = torch.log_softmax(logits[rows].float(), dim=-1)
    chosen = lp.gather(1, torch.tensor([[tokens[i]] for i in rows])).squeeze(1).tolist()
    k_max = max(wanted[i] or 0 for i in rows)
    top_v, top_i = lp.topk(k_max, dim=-1) if k_max else (None, None)
    for j, i in enumerate(rows):
        k = wanted[i] or 0
        top = tuple(zip(top_i[j, :k].tolist(), top_v[j, :k].tolist(), strict=True)) if k else ()
        out[i] = (chosen[j], top)
    return out
