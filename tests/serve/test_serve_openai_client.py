"""The OpenAI API as the official ``openai`` Python client uses it, against a real Serve
deployment: log probabilities, ``n`` choices (streamed and whole), and a chat the model's
template refuses answered 400 (the client raises ``BadRequestError``), not 500.

The served checkpoint is the tiny model with a Mistral-style chat template, which raises on
roles that do not alternate user/assistant - the case that used to be a 500.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from tests.serve.conftest import tiny_args

pytestmark = pytest.mark.serve

openai = pytest.importorskip("openai")

APP = "tiny-openai"
PREFIX = "/oai"
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)


@pytest.fixture(scope="module")
def mistral_like(tiny_model: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mistral-like") / "model"
    shutil.copytree(tiny_model, out)
    (out / "chat_template.jinja").write_text(MISTRAL_TEMPLATE)
    return out


@pytest.fixture(scope="module")
def client(ray_serve, mistral_like):
    from ray import serve

    from rayserve.app import LLMServer

    app = LLMServer.options(ray_actor_options={"num_cpus": 0.1}).bind(tiny_args(mistral_like))
    serve.run(app, name=APP, route_prefix=PREFIX)
    yield openai.OpenAI(base_url=f"{ray_serve.http_url}{PREFIX}/v1", api_key="unused", max_retries=0)
    serve.delete(APP)


USER = [{"role": "user", "content": "what is kaito"}]


def chat(client, **kw):
    """A chat completion of ``USER`` with eos ignored (so token counts are exact), ``kw`` on top."""
    return client.chat.completions.create(
        **{"model": "tiny-phi-3", "messages": USER, "extra_body": {"ignore_eos": True}, **kw}
    )


def test_chat_logprobs_and_top_logprobs(client):
    r = chat(client, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 6
    # a token may be part of a character (its text is then U+FFFD): its bytes are exact
    assert bytes(b for t in content for b in t.bytes).decode(errors="replace") == r.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        assert t.top_logprobs[0].bytes == t.bytes  # greedy picks the most likely token
        assert math.isclose(t.top_logprobs[0].logprob, t.logprob, rel_tol=1e-5)
    plain = client.chat.completions.create(model="tiny-phi-3", messages=USER, max_tokens=2)
    assert plain.choices[0].logprobs is None


def test_completion_logprobs(client):
    r = client.completions.create(
        model="tiny-phi-3",
        prompt="hello world",
        max_tokens=5,
        temperature=0,
        logprobs=2,
        extra_body={"ignore_eos": True},
    )
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert len(lp.text_offset) == 5
    assert lp.text_offset[0] == 0 and all(len(t) == 2 for t in lp.top_logprobs)


def test_n_choices_whole_and_streamed(client):
    r = chat(client, max_tokens=8, n=3, temperature=1.0, seed=5)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert r.usage.completion_tokens == 24
    again = chat(client, max_tokens=8, n=3, temperature=1.0, seed=5)
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]
    assert len({c.message.content for c in r.choices}) > 1  # seed + i: the choices differ

    stream = chat(
        client, max_tokens=8, n=2, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    texts, finished, usage = ["", ""], set(), None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            if c.finish_reason:
                finished.add(c.index)
    assert finished == {0, 1} and usage.completion_tokens == 16
    assert texts[0] == texts[1]  # greedy: both choices are the same continuation
    whole = client.chat.completions.create(
        model="tiny-phi-3", messages=USER, max_tokens=8, temperature=0, extra_body={"ignore_eos": True}
    )
    assert texts[0] == whole.choices[0].message.content

    comp = client.completions.create(model="tiny-phi-3", prompt="hello", max_tokens=4, n=2, temperature=0)
    assert len(comp.choices) == 2 and comp.choices[0].text == comp.choices[1].text


def test_a_chat_the_template_refuses_is_a_400(client):
    bad = [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny-phi-3", messages=bad, max_tokens=2)
    assert err.value.status_code == 400
    assert "alternate" in err.value.message
    ok = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}, *USER]
    assert client.chat.completions.create(model="tiny-phi-3", messages=ok, max_tokens=2).choices
