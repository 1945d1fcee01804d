"""The pure scheduler, driven step by step without torch or a model: admission, limits, which
rows stay, and the cache ops that keep the stages' caches in step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import rayserve
from rayserve.cacheops import MergeFrom, Reset, Select
from rayserve.params import SamplingParams
from rayserve.scheduler import Scheduler
from rayserve.sequence import EngineOverloaded, FinishReason, Sequence

_ids = iter(range(10**6))


def _seq(prompt_len: int = 2, max_new: int = 8, generated: int = 0) -> Sequence:
    seq = Sequence(next(_ids), [1] * prompt_len, SamplingParams(max_new_tokens=max_new))
    seq.generated = [5] * generated
    return seq


def _prefill(sched: Scheduler) -> list[Sequence]:
    """What the engine does between ``schedule`` and ``join``: each admitted row gets a token."""
    plan = sched.schedule()
    for s in plan.admitted:
        s.generated.append(5)
    return plan.admitted


def test_the_scheduler_and_the_sequence_types_do_not_import_torch():
    code = "import sys, rayserve.scheduler, rayserve.sequence; sys.exit('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(rayserve.__file__).parents[1])}
    assert subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode == 0


def test_admission_is_first_come_first_served_up_to_the_batch_size():
    sched = Scheduler(max_batch_size=2, max_waiting=4)
    a, b, c = _seq(), _seq(), _seq()
    for s in (a, b, c):
        sched.add(s)
    plan = sched.schedule()
    assert plan.admitted == [a, b] and plan.ops == [] and list(sched.waiting) == [c]
    assert sched.prefilling == [a, b]
    a.generated.append(5), b.generated.append(5)
    assert sched.join(plan.admitted) == [MergeFrom("prefill")]
    assert sched.running == [a, b] and sched.prefilling == []
    assert sched.schedule().admitted == []  # full batch: c waits


def test_a_full_queue_refuses_at_once_but_cancelled_requests_do_not_count():
    sched = Scheduler(max_batch_size=1, max_waiting=1)
    first, second = _seq(), _seq()
    sched.add(first)
    sched.add(second)  # one batch slot + one waiting place
    with pytest.raises(EngineOverloaded, match="2 requests already waiting"):
        sched.add(_seq())
    first.cancelled = True
    sched.add(third := _seq())
    assert list(sched.waiting) == [second, third]


def test_the_kv_budget_holds_the_head_of_the_queue_and_nothing_overtakes_it():
    # budget 40 token-rows: two sequences that may reach 20 tokens fit, a third does not
    sched = Scheduler(max_batch_size=8, kv_budget_tokens=40)
    a, b, big, small = _seq(4, 16), _seq(4, 16), _seq(4, 16), _seq(1, 1)
    for s in (a, b, big, small):
        sched.add(s)
    assert _prefill(sched) == [a, b]
    sched.join([a, b])
    assert sched.schedule().admitted == []  # big waits, and small behind it waits too
    assert list(sched.waiting) == [big, small]
    assert sched.fits(1, 10**6), "one sequence alone always runs"


def test_ended_rows_leave_with_a_selection_that_trims_their_columns():
    sched = Scheduler()
    long, short, other = _seq(prompt_len=6), _seq(prompt_len=2), _seq(prompt_len=3)
    sched.running = [long, short, other]
    for s in sched.running:
        s.generated = [5, 5, 5]  # cached: 8, 4, 5 tokens; the time axis is 8 wide
    long.finished = True
    plan = sched.schedule()
    assert plan.ops == [Select(rows=(1, 2), drop_left=3)] and sched.running == [short, other]
    short.cancelled, other.finished = True, True
    assert sched.schedule().ops == [Reset()] and sched.running == []


def test_rows_that_end_during_their_prefill_leave_right_after_joining():
    sched = Scheduler(max_batch_size=4)
    old = _seq(prompt_len=2, generated=4)  # cached 5
    sched.running = [old]
    one, two = _seq(prompt_len=3, max_new=1), _seq(prompt_len=3)
    sched.add(one), sched.add(two)
    admitted = _prefill(sched)
    one.finished = True  # its first token was its last (max_new_tokens=1)
    old.cancelled = True  # its client left while the group was prefilled
    assert sched.join(admitted) == [MergeFrom("prefill"), Select(rows=(2,), drop_left=2)]
    assert sched.running == [two]


def test_abort_all_hands_back_every_sequence_it_owned():
    sched = Scheduler(max_batch_size=2)
    running, prefilling, waiting = _seq(generated=1), _seq(), _seq()
    sched.running, sched.prefilling = [running], [prefilling]
    sched.add(waiting)
    assert sched.abort_all() == [prefilling, running, waiting]
    assert not sched.has_work and sched.prefilling == []


@pytest.mark.parametrize(
    ("params", "tokens", "reasons"),
    [
        (SamplingParams(max_new_tokens=3), [4, 9], [None, FinishReason.STOP]),
        (SamplingParams(max_new_tokens=2), [4, 4], [None, FinishReason.LENGTH]),
        (SamplingParams(max_new_tokens=3, min_new_tokens=1), [9, 9], [None, FinishReason.STOP]),
        (SamplingParams(max_new_tokens=2, ignore_eos=True), [9, 9], [None, FinishReason.LENGTH]),
    ],
    ids=["eos", "length", "eos-after-min", "ignore-eos"],
)
def test_a_sequence_decides_its_own_end_and_keeps_the_stop_token(params, tokens, reasons):
    seq = Sequence(0, [1], params)
    events = [seq.append(t, {9}) for t in tokens]
    assert [e.finish_reason for e in events] == reasons
    assert [e.token_id for e in events] == tokens and seq.generated == tokens and seq.finished
