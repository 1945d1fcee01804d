"""rayserve.tuning: the tuning loop takes exactly the optimizer steps num_train_epochs asks for.

The first loop reset its micro-batch counter every pass, so with fewer batches per pass than
gradient_accumulation_steps it never stepped and never ended (issue 11, item 12); with other
sizes it ran extra passes and carried a pass's leftover gradients into the next one. The loop
here is ``train.fit`` itself, driven with a one-parameter model whose gradient names the rows
that produced it.
"""

from __future__ import annotations

import math

import pytest
import torch

from rayserve.tuning.schedule import EmptyPassError, step_groups, steps_per_epoch, total_steps
from rayserve.tuning.train import fit


class _Probe(torch.nn.Module):
    """loss = w * (sum of the batch's row ids): d loss / d w is the batch's id sum, so the
    gradient at a step says exactly which micro-batches went into it."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[int] = []  # every row id, every pass
        self.group_sums: list[float] = []  # id sums since the last optimizer step

    def forward(self, input_ids, attention_mask, labels):
        self.seen.extend(input_ids.flatten().tolist())
        self.group_sums.append(float(input_ids.sum()))
        return type("Out", (), {"loss": self.w * input_ids.sum().float()})()


class _Recording(torch.optim.SGD):
    """SGD that checks, at every step, that the gradient is the mean over this group only."""

    def __init__(self, probe: _Probe, grad_accum: int) -> None:
        super().__init__([probe.w], lr=0.01)
        self.probe, self.grad_accum, self.steps = probe, grad_accum, 0

    def step(self, closure=None):
        sums = self.probe.group_sums
        assert 1 <= len(sums) <= self.grad_accum
        assert self.probe.w.grad is not None
        mean = sum(sums) / len(sums)
        assert float(self.probe.w.grad) == pytest.approx(mean), "gradient leaked across steps"
        self.probe.group_sums = []
        self.steps += 1
        return super().step(closure)


def _passes(rows: int, batch_size: int):
    """A pass over ``rows`` examples (ids 1..rows), in batches, like ``data.batches``."""

    def one_pass():
        ids = list(range(1, rows + 1))
        for i in range(0, rows, batch_size):
            chunk = torch.tensor([ids[i : i + batch_size]])
            yield chunk, torch.ones_like(chunk), chunk

    return one_pass


@pytest.mark.timeout(60)
@pytest.mark.parametrize("epochs", [1, 2, 3])
@pytest.mark.parametrize("batch_size", [1, 2, 3])
@pytest.mark.parametrize("grad_accum", [1, 2, 3, 4])
def test_optimizer_steps_match_num_train_epochs(grad_accum: int, batch_size: int, epochs: int) -> None:
    for rows in range(1, 10):
        probe = _Probe()
        opt = _Recording(probe, grad_accum)
        total = total_steps(rows, batch_size, grad_accum, epochs, None)
        losses = fit(probe, opt, _passes(rows, batch_size), grad_accum, total, torch.device("cpu"))
        per_epoch = math.ceil(math.ceil(rows / batch_size) / grad_accum)
        assert opt.steps == len(losses) == per_epoch * epochs, (rows, grad_accum, batch_size)
        # every row exactly once per epoch: no extra pass, no pass cut short
        assert sorted(probe.seen) == sorted(list(range(1, rows + 1)) * epochs), (rows, grad_accum, batch_size)
        assert probe.group_sums == [], "micro-batches ran after the last step"


def test_kaito_sample_three_rows_batch_one_accumulation_four_ends() -> None:
    """Kaito's sample tuning config on a three-row dataset: the pass is shorter than one
    accumulation group, so each epoch is one (short) step."""
    probe = _Probe()
    total = total_steps(3, 1, 4, 3, None)
    assert total == 3
    fit(probe, _Recording(probe, 4), _passes(3, 1), 4, total, torch.device("cpu"))
    assert sorted(probe.seen) == [1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_fractional_epochs_round_up_to_a_whole_step_and_max_steps_wins() -> None:
    assert total_steps(9, 1, 2, 1.5, None) == math.ceil(5 * 1.5)
    assert total_steps(9, 1, 2, 0.01, None) == 1
    assert total_steps(3, 1, 4, 3, 7) == 7
    groups = list(step_groups(_passes(3, 1), 4, 7))
    assert [len(g) for g in groups] == [3] * 7  # max_steps past the data: more passes, each one step


def test_an_empty_pass_is_an_error_not_an_endless_loop() -> None:
    with pytest.raises(EmptyPassError):
        list(step_groups(lambda: iter(()), 2, 3))
    with pytest.raises(ValueError):
        steps_per_epoch(0, 1, 1)
