"""The HTTP API on a real Serve deployment of the tiny model: answers, shapes, errors."""

from __future__ import annotations

import json

import httpx
import pytest
import torch

from tests.serve.conftest import tiny_args, wait_for

pytestmark = pytest.mark.serve

APP = "tiny-http"
PREFIX = "/tiny"


@pytest.fixture(scope="module")
def url(ray_serve, tiny_model):
    from ray import serve

    from rayserve.app import LLMServer

    app = LLMServer.options(ray_actor_options={"num_cpus": 0.1}).bind(tiny_args(tiny_model))
    serve.run(app, name=APP, route_prefix=PREFIX)
    yield ray_serve.http_url + PREFIX
    serve.delete(APP)


@pytest.fixture(scope="module")
def reference(tiny_model):
    """Greedy continuation by plain transformers, to check the served text against."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)

    def greedy(text: str, n: int) -> str:
        ids = tok(text, return_tensors="pt").input_ids
        out = model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=None, min_new_tokens=n)
        return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)

    return greedy


def test_health_and_models(url):
    r = httpx.get(f"{url}/health", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "Healthy"
    models = httpx.get(f"{url}/v1/models", timeout=30).json()
    assert [m["id"] for m in models["data"]] == ["tiny-phi-3"]
    assert models["data"][0]["max_model_len"] == 256


def test_legacy_chat_prompt_matches_transformers(url, reference):
    body = {"prompt": "hello world", "generate_kwargs": {"max_new_tokens": 8, "do_sample": False}}
    r = httpx.post(f"{url}/chat", json=body, timeout=60)
    assert r.status_code == 200, r.text
    expected = reference("hello world", 8)
    # eos may stop the served one early; the reference ran without eos
    result = r.json()["Result"]
    assert result.startswith("hello world")
    assert expected.startswith(result[len("hello world") :])


def test_legacy_chat_messages_and_errors(url):
    ok = httpx.post(
        f"{url}/chat",
        json={"messages": [{"role": "user", "content": "hi"}], "generate_kwargs": {"max_new_tokens": 4}},
        timeout=60,
    )
    assert ok.status_code == 200 and isinstance(ok.json()["Result"], str)
    missing = httpx.post(f"{url}/chat", json={"generate_kwargs": {}}, timeout=30)
    assert missing.status_code == 400 and "prompt" in missing.json()["detail"]
    beams = httpx.post(f"{url}/chat", json={"prompt": "x", "generate_kwargs": {"num_beams": 2}}, timeout=30)
    assert beams.status_code == 400 and "num_beams" in beams.json()["detail"]
    garbage = httpx.post(f"{url}/chat", content=b"{not json", timeout=30)
    assert garbage.status_code == 400


def test_openai_chat_and_stream_agree(url):
    body = {
        "model": "tiny-phi-3",
        "messages": [{"role": "user", "content": "one two"}],
        "max_tokens": 10,
        "temperature": 0,
        "ignore_eos": True,
    }
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    full = r.json()
    assert full["object"] == "chat.completion"
    assert full["choices"][0]["finish_reason"] == "length"
    assert full["usage"]["completion_tokens"] == 10
    text = full["choices"][0]["message"]["content"]

    streamed, usage = [], None
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        timeout=60,
        json={**body, "stream": True, "stream_options": {"include_usage": True}},
    ) as s:
        assert s.status_code == 200
        assert s.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in s.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    for ln in lines[:-1]:
        ev = json.loads(ln[len("data: ") :])
        assert ev["object"] == "chat.completion.chunk"
        if ev.get("usage"):
            usage = ev["usage"]
        for ch in ev["choices"]:
            streamed.append(ch["delta"].get("content", ""))
    assert "".join(streamed) == text
    assert usage["completion_tokens"] == 10


def test_completions_stop_and_echo(url):
    base = {"prompt": "the model", "max_tokens": 12, "temperature": 0, "ignore_eos": True}
    full = httpx.post(f"{url}/v1/completions", json=base, timeout=60).json()["choices"][0]["text"]
    assert len(full) > 2
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    cut = httpx.post(f"{url}/v1/completions", json={**base, "stop": [stop], "echo": True}, timeout=60).json()
    choice = cut["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["text"] == "the model" + full[: full.index(stop)]
    with httpx.stream("POST", f"{url}/v1/completions", json={**base, "stream": True}, timeout=60) as s:
        chunks = [json.loads(ln[6:]) for ln in s.iter_lines() if ln.startswith("data: {")]
    assert "".join(c["choices"][0]["text"] for c in chunks) == full


def test_limits_and_routing_errors(url):
    unknown = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]},
        timeout=30,
    )
    assert unknown.status_code == 404 and "gpt-9" in unknown.json()["error"]["message"]
    too_many = httpx.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 1000}, timeout=30)
    assert too_many.status_code == 400 and "context" in too_many.json()["error"]["message"]
    long_prompt = httpx.post(f"{url}/v1/completions", json={"prompt": "hello world " * 300}, timeout=30)
    assert long_prompt.status_code == 400 and "context" in long_prompt.json()["error"]["message"]
    huge = httpx.post(f"{url}/v1/completions", content=b'{"prompt": "' + b"a" * (2 << 20) + b'"}', timeout=30)
    assert huge.status_code == 413
    bad = httpx.post(f"{url}/v1/chat/completions", json={"messages": []}, timeout=30)
    assert bad.status_code == 400 and "messages" in bad.json()["error"]["message"]
    n99 = httpx.post(f"{url}/v1/completions", json={"prompt": "x", "n": 99}, timeout=30)
    assert n99.status_code == 400


def test_concurrent_requests_are_batched_and_correct(url):
    """8 clients at once get the same greedy text they get alone."""
    import concurrent.futures as cf

    prompts = [f"{w} model" for w in ["one", "two", "three", "four", "five", "six", "seven", "eight"]]

    def ask(p: str) -> str:
        body = {"prompt": p, "max_tokens": 8, "temperature": 0, "ignore_eos": True}
        r = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
        r.raise_for_status()
        return r.json()["choices"][0]["text"]

    alone = [ask(p) for p in prompts[:3]]
    with cf.ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, prompts))
    assert together[:3] == alone


def test_prometheus_metrics_exported(url, ray_serve):
    """Our kaito_llm_* metrics appear on Ray's metrics endpoint beside ray_serve_*."""
    body = {"prompt": "hello", "max_tokens": 4, "temperature": 0}
    assert httpx.post(f"{url}/v1/completions", json=body, timeout=60).status_code == 200
    wanted = [
        "ray_kaito_llm_requests_total",
        "ray_kaito_llm_request_latency_seconds_bucket",
        "ray_kaito_llm_time_to_first_token_seconds_bucket",
        "ray_kaito_llm_generated_tokens_total",
        "ray_kaito_llm_prompt_tokens_total",
        "ray_kaito_llm_batch_size_bucket",
        "ray_kaito_llm_queue_depth",
        "ray_kaito_llm_running_sequences",
        "ray_serve_num_http_requests_total",
    ]

    def scraped() -> bool:
        text = httpx.get(f"{ray_serve.metrics_url}/metrics", timeout=10).text
        missing = [w for w in wanted if w not in text]
        assert not missing, missing
        return True

    wait_for(scraped, timeout=60, interval=1, what="metrics")


def test_client_disconnect_cancels_generation(url):
    """Closing a stream mid-way frees the batch slot instead of decoding to max_tokens."""
    before = httpx.get(f"{url}/health", timeout=30).json()["steps"]
    body = {"prompt": "one", "max_tokens": 240, "temperature": 0, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as s:
        for line in s.iter_lines():
            if line.startswith("data: {"):
                break  # got a token: hang up
    wait_for(
        lambda: httpx.get(f"{url}/health", timeout=30).json()["running"] == 0, timeout=30, what="slot freed"
    )
    steps = httpx.get(f"{url}/health", timeout=30).json()["steps"] - before
    assert steps < 200, f"decoded {steps} steps for a stream that was closed after its first token"
