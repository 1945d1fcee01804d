"""Streaming detokenization, stop strings, sampling and request schemas."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from rayserve.sampling import RowSampler, SamplingParams, pick_tokens
from rayserve.schemas import ChatCompletionRequest, CompletionRequest, LegacyChatRequest
from rayserve.text import IncrementalDecoder, StopMatcher


class ByteTok:
    """Token id = one UTF-8 byte, like byte-level BPE's worst case."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


def test_incremental_decoder_waits_for_whole_characters():
    d = IncrementalDecoder(ByteTok())
    out = [d.push(b) for b in "hé!".encode()]
    assert out == ["h", "", "é", "!"]


def test_stop_matcher_holds_back_prefix_and_cuts():
    m = StopMatcher(["END"])
    emitted = "".join(m.feed(ch) for ch in "abcENxyEND tail")
    assert m.stopped and emitted == "abcENxy"
    plain = StopMatcher(["##"])
    assert plain.feed("a#") == "a" and plain.flush() == "#"


def test_greedy_fast_path_and_seeded_sampling():
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0]])
    greedy = [RowSampler(SamplingParams()) for _ in range(2)]
    assert pick_tokens(logits, greedy, [[], []], [0]) == [1, 0]
    p = SamplingParams(do_sample=True, temperature=1.0, top_k=2, seed=7)
    a = [RowSampler(p).pick(logits[0], [], ()) for _ in range(5)]
    b = [RowSampler(p).pick(logits[0], [], ()) for _ in range(5)]
    assert a == b and set(a) <= {1, 2}
    nucleus = SamplingParams(do_sample=True, top_p=0.5, seed=1)
    assert {RowSampler(nucleus).pick(logits[0], [], ()) for _ in range(10)} == {1}


def test_min_tokens_blocks_eos_and_repetition_penalty_applies():
    logits = torch.tensor([[9.0, 1.0, 0.5]])
    s = RowSampler(SamplingParams(min_new_tokens=2))
    assert pick_tokens(logits, [s], [[]], eos_ids=[0]) == [1]
    rp = RowSampler(SamplingParams(repetition_penalty=5.0))
    assert rp.pick(torch.tensor([2.0, 1.0, 0.5]), history=[0], eos_blocked=()) == 1


def test_schemas_accept_clients_and_reject_nonsense():
    assert LegacyChatRequest.model_validate({"prompt": "x", "generate_kwargs": {"foo": 1}}).prompt == "x"
    with pytest.raises(ValidationError, match="prompt"):
        LegacyChatRequest.model_validate({})
    chat = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "stop": "x",
            "presence_penalty": 0,
            "user": "u",
        }
    )
    assert chat.messages[0].text() == "hi" and chat.stop == ["x"]
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({"messages": [{"role": "wizard", "content": "x"}]})
    assert CompletionRequest.model_validate({"prompt": ["only"]}).prompt == "only"
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"prompt": ["a", "b"]})
