"""How many optimizer steps a tuning job takes, and which micro-batches make up each one.

Why a module of its own, with no torch in it: the step count is what ends the job. The first
trainer counted micro-batches per pass over the data and stepped every
``gradient_accumulation_steps``-th one, so a pass shorter than one accumulation group (Kaito's
own sample: batch 1, accumulation 4, three rows) never stepped, and ``while step < total`` spun
on a billed GPU forever. Here the schedule is a plain function of the data's size, checked by a
test over small datasets, and the loop in ``train.py`` only follows it:

- a pass's last, partial group is a step of its own (as Hugging Face's Trainer does), so every
  pass ends in a step and no gradient leaks into the next pass;
- steps are counted across passes, and the job stops after exactly ``total_steps``;
- a pass that yields nothing is an error, not another turn of the loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

__all__ = ["EmptyPassError", "step_groups", "steps_per_epoch", "total_steps"]

B = TypeVar("B")


class EmptyPassError(ValueError):
    """A pass over the training data produced no batch (an empty dataset)."""


def steps_per_epoch(rows: int, batch_size: int, grad_accum: int) -> int:
    """Optimizer steps in one pass over ``rows`` examples: one per accumulation group, the last
    group possibly short."""
    if rows < 1 or batch_size < 1 or grad_accum < 1:
        raise ValueError(f"need rows, batch_size, grad_accum >= 1, got {rows}, {batch_size}, {grad_accum}")
    return math.ceil(math.ceil(rows / batch_size) / grad_accum)


def total_steps(rows: int, batch_size: int, grad_accum: int, epochs: float, max_steps: int | None) -> int:
    """The job's optimizer steps: ``max_steps`` when set (as in Hugging Face's TrainingArguments,
    it wins over epochs), else ``num_train_epochs`` passes rounded up to a whole step."""
    if max_steps is not None:
        return max_steps
    return max(1, math.ceil(steps_per_epoch(rows, batch_size, grad_accum) * epochs))


def step_groups(passes: Callable[[], Iterable[B]], grad_accum: int, total: int) -> Iterator[list[B]]:
    """The micro-batches of each optimizer step, ``total`` groups in all.

    ``passes()`` starts a fresh (reshuffled) pass over the data each time it is called; each group
    is ``grad_accum`` micro-batches, except a pass's last one, which is whatever is left.
    """
    if grad_accum < 1:
        raise ValueError(f"grad_accum must be >= 1, got {grad_accum}")
    done = 0
    while done < total:
        group: list[B] = []
        yielded = False
        for batch in passes():
            yielded = True
            group.append(batch)
            if len(group) < grad_accum:
                continue
            yield group
            group, done = [], done + 1
            if done >= total:
                return
        if not yielded:
            raise EmptyPassError("a pass over the training data produced no batch")
        if group:
            yield group
            done += 1
