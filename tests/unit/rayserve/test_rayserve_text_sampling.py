"""Streaming detokenization, stop strings, sampling and request schemas."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from rayserve.errors import RequestError
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


def test_each_dialect_says_what_it_asks_of_generation():
    msgs = [{"role": "user", "content": "hi"}]
    chat = ChatCompletionRequest.model_validate(
        {"messages": msgs, "max_completion_tokens": 7, "temperature": 0, "stop": "x"}
    )
    assert chat.prompt_input().messages == [("user", "hi")] and chat.stops() == ["x"]
    assert chat.token_limit(10, 256) == (7, "max_tokens")
    params = chat.to_sampling_params(7, 10)
    assert params.max_new_tokens == 7 and params.greedy

    ids = CompletionRequest.model_validate({"prompt": [5, 6], "min_tokens": 50})
    assert ids.prompt_input().token_ids == [5, 6] and ids.token_limit(2, 256) == (16, "max_tokens")
    assert ids.to_sampling_params(16, 2).min_new_tokens == 16  # never more than it may generate

    legacy = LegacyChatRequest.model_validate(
        {"prompt": "b", "prefix": "a", "generate_kwargs": {"min_length": 5}}
    )
    assert legacy.prompt_input().text == "ab" and legacy.stops() is None
    # max_length (200) is a ceiling on prompt + output, clamped to the window
    assert legacy.token_limit(3, 100) == (97, "generate_kwargs.max_new_tokens")
    assert legacy.to_sampling_params(97, 3).min_new_tokens == 2  # min_length counts the prompt too
    with pytest.raises(RequestError, match="max_length=200 leaves no room after the 200-token prompt"):
        legacy.token_limit(200, 4096)


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from transformers import AutoTokenizer

    from hack.tiny_model import ensure_tiny_model

    return AutoTokenizer.from_pretrained(ensure_tiny_model())


class CountingTok:
    """A real tokenizer that records how many ids each decode call was given."""

    def __init__(self, tok) -> None:
        self.tok, self.sizes = tok, []

    def decode(self, ids, skip_special_tokens=True):
        self.sizes.append(len(ids))
        return self.tok.decode(ids, skip_special_tokens=skip_special_tokens)


def test_incremental_decoder_matches_one_decode_and_reads_a_short_window(tiny_tokenizer):
    import random

    rng = random.Random(3)
    ids = [rng.randrange(len(tiny_tokenizer)) for _ in range(400)]
    tok = CountingTok(tiny_tokenizer)
    d = IncrementalDecoder(tok)
    text = "".join(d.push(i) for i in ids) + d.flush()
    assert text == tiny_tokenizer.decode(ids, skip_special_tokens=True)
    # O(1) per token, not O(n): no decode call sees more than a few ids
    assert max(tok.sizes) < 16, max(tok.sizes)


def test_token_logprobs_only_for_rows_that_ask():
    from rayserve.sampling import token_logprobs

    logits = torch.tensor([[0.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
    out = token_logprobs(logits, [1, 0], [2, None])
    lp = torch.log_softmax(logits[0], -1)
    assert out[1] == (None, ())
    chosen, top = out[0]
    assert chosen == pytest.approx(float(lp[1]))
    assert [t for t, _ in top] == [1, 2] and top[0][1] == pytest.approx(float(lp[1]))
