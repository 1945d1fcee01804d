"""Faults and bad input against a real Serve deployment of the tiny model (issue 7, "Serve:").

What is injected, and what the service must do:

* malformed JSON, wrong types, missing fields, huge string fields on ``/chat`` and
  ``/v1/chat/completions``: a 4xx whose message names the problem; never a 5xx, never a hang;
* prompts longer than the context window and ``max_tokens`` past it: a 400 naming the limit;
* a client hanging up mid-stream (SSE): the engine drops that sequence at once while
  another client's stream on the same replica runs to its end;
* a replica actor killed (``ray.kill``) under load, and a pipeline stage actor of a sharded
  replica killed under load: in-flight requests end within a bound with an error (or an
  answer), never hang; Serve replaces the replica and new requests succeed. The recovery
  time is printed (``-s`` shows it) and bounded.

Everything is loopback, on the session's Ray (tests/serve/conftest.py), bounded by timeouts.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest

from tests.serve.conftest import tiny_args, wait_for

pytestmark = pytest.mark.serve

CONTEXT = 256  # tiny_args' max_context
CHAT, OPENAI = "/chat", "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]


def _error_text(r: httpx.Response) -> str:
    """The message of an error answer in either dialect (legacy ``detail``, OpenAI ``error``)."""
    body = r.json()
    if "detail" in body:
        return str(body["detail"])
    return str(body["error"]["message"])


def _deploy(name: str, args: dict, **options):
    from ray import serve

    from rayserve.app import LLMServer

    app = LLMServer.options(ray_actor_options={"num_cpus": 0.1}, **options).bind(args)
    serve.run(app, name=name, route_prefix=f"/{name}")


@pytest.fixture(scope="module")
def url(ray_serve, tiny_model):
    from ray import serve

    _deploy("faults", tiny_args(tiny_model))
    yield f"{ray_serve.http_url}/faults"
    serve.delete("faults")


# --- bad input -------------------------------------------------------------------------------
# (route, raw body, status, words the message must contain); bodies are bytes so that
# malformed JSON reaches the server as-is.
BAD = [
    (CHAT, b"{not json", 400, ["invalid"]),
    (OPENAI, b"{not json", 400, ["invalid"]),
    (CHAT, b'{"prompt": "hi"', 400, ["invalid"]),  # truncated
    (OPENAI, b'{"messages": [', 400, ["invalid"]),
    (CHAT, b"\xff\xfe\x00garbage", 400, ["invalid"]),  # not UTF-8
    (OPENAI, b"\xff\xfe\x00garbage", 400, ["invalid"]),
    (CHAT, b"[1, 2, 3]", 400, ["invalid"]),  # JSON, but not an object
    (OPENAI, b"null", 400, ["invalid"]),
    (CHAT, b"", 400, ["prompt"]),  # empty body
    (OPENAI, b"", 400, ["messages"]),
    (CHAT, b"{}", 400, ["prompt"]),  # missing fields
    (OPENAI, b"{}", 400, ["messages"]),
    (OPENAI, b'{"model": "tiny-phi-3"}', 400, ["messages"]),
    (CHAT, b'{"prompt": 42}', 400, ["prompt"]),  # wrong types
    (CHAT, b'{"prompt": ["a", "b"]}', 400, ["prompt"]),
    (CHAT, b'{"prompt": "hi", "generate_kwargs": "fast"}', 400, ["generate_kwargs"]),
    (CHAT, b'{"prompt": "hi", "generate_kwargs": {"max_new_tokens": "ten"}}', 400, ["max_new_tokens"]),
    (CHAT, b'{"prompt": "hi", "generate_kwargs": {"max_new_tokens": -5}}', 400, ["max_new_tokens"]),
    (CHAT, b'{"prompt": "hi", "generate_kwargs": {"temperature": "hot"}}', 400, ["temperature"]),
    (CHAT, b'{"prompt": "hi", "generate_kwargs": {"top_p": 0}}', 400, ["top_p"]),
    (CHAT, b'{"prompt": "hi", "generate_kwargs": {"do_sample": "maybe"}}', 400, ["do_sample"]),
    (CHAT, b'{"messages": [{"role": "robot", "content": "hi"}]}', 400, ["role"]),
    (CHAT, b'{"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}', 400, ["prompt", "messages"]),
    (CHAT, b'{"prompt": "hi", "temperature": 0.5}', 400, ["temperature"]),  # unknown top-level key
    (OPENAI, b'{"messages": "hi"}', 400, ["messages"]),
    (OPENAI, b'{"messages": [{"content": "hi"}]}', 400, ["role"]),
    (OPENAI, b'{"messages": [{"role": "user", "content": 7}]}', 400, ["content"]),
    (OPENAI, b'{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}', 400, ["content"]),
    (OPENAI, b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}', 400, ["max_tokens"]),
    (OPENAI, b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', 400, ["max_tokens"]),
    (OPENAI, b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2.5}', 400, ["max_tokens"]),
    (OPENAI, b'{"messages": [{"role": "user", "content": "hi"}], "temperature": -1}', 400, ["temperature"]),
    (OPENAI, b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', 400, ["temperature"]),
    (OPENAI, b'{"messages": [{"role": "user", "content": "hi"}], "stream": [1]}', 400, ["stream"]),
    (OPENAI, b'{"messages": [{"role": "user", "content": "hi"}], "stop": [""]}', 400, ["stop"]),
    (OPENAI, b'{"messages": [{"role": "user", "content": "hi"}], "stop": 5}', 400, ["stop"]),
    (OPENAI, b'{"messages": [{"role": "user", "content": "hi"}], "n": 17}', 400, ["n"]),
    (OPENAI, b'{"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}', 400, ["top_logprobs"]),
    (OPENAI, b'{"messages": [{"role": "user", "content": "hi"}], "model": "nope"}', 404, ["nope"]),
    (CHAT, b'{"prompt": "hi", "model": "nope"}', 404, ["nope"]),
]


@pytest.mark.parametrize(
    ("route", "body", "status", "words"), BAD, ids=[f"{r}-{b[:40]!r}" for r, b, *_ in BAD]
)
def test_bad_body_is_a_clean_4xx(url, route, body, status, words):
    t0 = time.monotonic()
    r = httpx.post(url + route, content=body, headers={"content-type": "application/json"}, timeout=30)
    assert time.monotonic() - t0 < 10
    assert r.status_code == status, (r.status_code, r.text[:500])
    message = _error_text(r)
    for w in words:
        assert w in message, message
    if route == OPENAI:
        assert r.json()["error"]["code"] == status


# Values that pass the schema but used to blow up further in: each must be a 4xx or a 200.
EDGE = [
    (CHAT, {"prompt": ""}),
    (CHAT, {"prompt": "", "prefix": ""}),
    (CHAT, {"prompt": "hi", "generate_kwargs": {"seed": 2**64, "max_new_tokens": 2}}),
    (CHAT, {"prompt": "hi", "generate_kwargs": {"seed": -(2**70), "max_new_tokens": 2}}),
    (CHAT, {"prompt": "hi", "generate_kwargs": {"max_new_tokens": 10**30}}),
    (CHAT, {"prompt": "hi", "generate_kwargs": {"top_k": 10**12, "max_new_tokens": 2}}),
    (CHAT, {"prompt": "hi", "generate_kwargs": {"temperature": 0, "do_sample": True, "max_new_tokens": 2}}),
    (CHAT, {"prompt": "hi", "generate_kwargs": {"min_new_tokens": 10**6, "max_new_tokens": 2}}),
    (CHAT, {"prompt": "\ud800 lone surrogate", "generate_kwargs": {"max_new_tokens": 2}}),
    (OPENAI, {"messages": MSG, "seed": 2**64, "max_tokens": 2}),
    (OPENAI, {"messages": MSG, "top_k": 10**12, "max_tokens": 2}),
    (OPENAI, {"messages": MSG, "min_tokens": 10**6, "max_tokens": 2}),
    (OPENAI, {"messages": MSG, "max_tokens": 10**30}),
    (OPENAI, {"messages": [{"role": "user", "content": None}], "max_tokens": 2}),
    (OPENAI, {"messages": [{"role": "user", "content": "\ud800\x00"}], "max_tokens": 2}),
    (OPENAI, {"messages": MSG, "stop": ["x" * 5000], "max_tokens": 2}),
]


@pytest.mark.parametrize(("route", "body"), EDGE, ids=[f"{r}-{json.dumps(b)[:50]}" for r, b in EDGE])
def test_edge_values_never_5xx(url, route, body):
    # json.dumps keeps the lone surrogate as an escape, as a careless client would send it
    r = httpx.post(
        url + route, content=json.dumps(body), headers={"content-type": "application/json"}, timeout=30
    )
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code >= 400:
        assert _error_text(r)


def test_huge_string_fields(url):
    """Past ``max_body_bytes`` (1 MiB): 413 naming the limit, before any tokenizing. Under it
    but past the context: 400 naming the context. A huge model name or role: 404 / 400 with
    a bounded answer (the name is not echoed back whole)."""
    big = "word " * 250_000  # 1.25 MB
    for route, body in [(CHAT, {"prompt": big}), (OPENAI, {"messages": [{"role": "user", "content": big}]})]:
        r = httpx.post(url + route, json=body, timeout=30)
        assert r.status_code == 413 and str(1 << 20) in _error_text(r), r.text[:300]
        # a chunked upload (no content-length) is cut off at the limit too
        chunks = (json.dumps(body)[i : i + 65536].encode() for i in range(0, len(json.dumps(body)), 65536))
        r = httpx.post(url + route, content=chunks, timeout=30)
        assert r.status_code == 413, r.text[:300]
    near = "word " * 190_000  # 950 kB, under the limit: refused for the context by its byte length
    for route, body in [
        (CHAT, {"prompt": near}),
        (OPENAI, {"messages": [{"role": "user", "content": near}]}),
    ]:
        t0 = time.monotonic()
        r = httpx.post(url + route, json=body, timeout=30)
        assert r.status_code == 400 and f"maximum context length is {CONTEXT}" in _error_text(r), r.text[:300]
        assert time.monotonic() - t0 < 15
    name = "m" * 500_000
    for route, body in [(CHAT, {"prompt": "hi", "model": name}), (OPENAI, {"messages": MSG, "model": name})]:
        r = httpx.post(url + route, json=body, timeout=30)
        assert r.status_code == 404 and "tiny-phi-3" in _error_text(r)
        assert len(r.content) < 10_000, f"a {len(r.content)}-byte error answer echoes the input"
    r = httpx.post(url + OPENAI, json={"messages": [{"role": "r" * 500_000, "content": "hi"}]}, timeout=30)
    assert r.status_code == 400 and "role" in _error_text(r) and len(r.content) < 10_000


# --- the context window ----------------------------------------------------------------------
def test_prompt_longer_than_context(url):
    long = "hello world " * 200  # ~400 tokens > 256
    for route, body in [
        (CHAT, {"prompt": long}),
        (OPENAI, {"messages": [{"role": "user", "content": long}]}),
    ]:
        r = httpx.post(url + route, json=body, timeout=30)
        assert r.status_code == 400, r.text[:300]
        assert f"maximum context length is {CONTEXT}" in _error_text(r)


def test_max_tokens_beyond_context(url):
    cases = [
        (
            CHAT,
            {"prompt": "hi", "generate_kwargs": {"max_new_tokens": 1000}},
            "generate_kwargs.max_new_tokens",
        ),
        (OPENAI, {"messages": MSG, "max_tokens": 1000}, "max_tokens"),
        (OPENAI, {"messages": MSG, "max_completion_tokens": 1000}, "max_tokens"),
    ]
    for route, body, param in cases:
        r = httpx.post(url + route, json=body, timeout=30)
        assert r.status_code == 400, r.text[:300]
        message = _error_text(r)
        assert f"maximum context length of {CONTEXT}" in message and "1000" in message, message
        assert param in message, message
    # the documented clamp: legacy max_length (prompt + output, a ceiling in HF) past the
    # window is cut to it, so generation simply stops at the context length
    r = httpx.post(
        url + CHAT,
        json={"prompt": "hi", "generate_kwargs": {"max_length": 10_000, "do_sample": False}},
        timeout=60,
    )
    assert r.status_code == 200, r.text[:300]
    ok = httpx.post(url + OPENAI, json={"messages": MSG, "max_tokens": 4, "temperature": 0}, timeout=60)
    assert ok.status_code == 200, ok.text[:300]


# --- client disconnect -----------------------------------------------------------------------
def _health(url: str) -> dict:
    return httpx.get(f"{url}/health", timeout=30).json()


def test_disconnect_mid_stream_stops_that_request_only(url):
    """Hang up on a 240-token SSE stream after its first token while a second stream runs on
    the same replica: the engine drops the first (running falls to what the other needs,
    steps stay far below 240), the second streams to its end, and a new request is fast."""
    other_tokens, other_done = [], threading.Event()

    def other() -> None:
        body = {"messages": MSG, "max_tokens": 60, "temperature": 0, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", url + OPENAI, json=body, timeout=120) as s:
            for line in s.iter_lines():
                if line == "data: [DONE]":
                    other_done.set()
                elif line.startswith("data: {"):
                    delta = json.loads(line[6:])["choices"][0]["delta"]
                    if delta.get("content"):
                        other_tokens.append(delta["content"])

    wait_for(lambda: _health(url)["running"] == 0, timeout=30, what="idle engine")
    before = _health(url)["steps"]
    body = {"messages": MSG, "max_tokens": 240, "temperature": 0, "ignore_eos": True, "stream": True}
    t = threading.Thread(target=other, daemon=True)
    with httpx.stream("POST", url + OPENAI, json=body, timeout=60) as s:
        for line in s.iter_lines():
            if '"content"' in line:
                break  # first token: start the other client, then hang up
        t.start()
        wait_for(lambda: other_tokens, timeout=30, what="second stream under way")
    t.join(timeout=60)
    assert other_done.is_set(), "the other stream did not finish"
    wait_for(lambda: _health(url)["running"] == 0, timeout=30, what="slot freed")
    steps = _health(url)["steps"] - before
    assert steps < 150, f"{steps} decode steps: the closed 240-token stream kept generating"
    t0 = time.monotonic()
    r = httpx.post(url + CHAT, json={"prompt": "hi", "generate_kwargs": {"max_new_tokens": 4}}, timeout=30)
    assert r.status_code == 200 and time.monotonic() - t0 < 10


def test_client_timeout_on_plain_request_stops_generation(url):
    """A non-streaming client that gives up (read timeout) is a disconnect too: Serve
    cancels the handler and the engine drops the sequence instead of decoding 240 tokens."""
    body = {"messages": MSG, "max_tokens": 240, "temperature": 0, "ignore_eos": True}
    t0 = time.monotonic()  # how long the whole request takes here, to give up a quarter in
    assert httpx.post(url + OPENAI, json=body, timeout=60).status_code == 200
    patience = (time.monotonic() - t0) / 4
    wait_for(lambda: _health(url)["running"] == 0, timeout=30, what="idle engine")
    before = _health(url)["steps"]
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + OPENAI, json=body, timeout=httpx.Timeout(patience, connect=5))
    wait_for(lambda: _health(url)["running"] == 0, timeout=30, what="slot freed")
    steps = _health(url)["steps"] - before
    assert steps < 180, f"{steps} decode steps for a request whose client left after {patience:.2f} s"


# --- replicas and stages killed under load -----------------------------------------------------
def _load(url: str, n: int, stop: threading.Event) -> tuple[list[threading.Thread], list[tuple]]:
    """``n`` clients looping requests (alternating plain and streamed) until ``stop``; each
    outcome is (kind, status, seconds, message): a stream's status is 200 when it ended with
    ``[DONE]`` and no error event, else the error event's code (or the HTTP status when it
    was refused before streaming); a connection cut, or a stream ending without ``[DONE]``,
    is ("cut", why)."""
    outcomes: list[tuple] = []

    def client(i: int) -> None:
        body = {"messages": MSG, "max_tokens": 48, "temperature": 0, "ignore_eos": True}
        with httpx.Client(timeout=httpx.Timeout(60, connect=5)) as c:
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    if i % 2:
                        with c.stream("POST", url + OPENAI, json={**body, "stream": True}) as s:
                            lines = [ln for ln in s.iter_lines() if ln]
                        errors = [
                            json.loads(ln[6:])["error"] for ln in lines if ln.startswith('data: {"error"')
                        ]
                        kind, status = "stream", errors[0]["code"] if errors else s.status_code
                        message = errors[0]["message"] if errors else ""
                        if s.status_code != 200:  # refused before streaming: a plain error answer
                            status, message = s.status_code, "\n".join(lines)[:300]
                        elif not lines or lines[-1] != "data: [DONE]":
                            kind, status = "cut", "ended without [DONE]"
                        outcomes.append((kind, status, time.monotonic() - t0, message))
                    else:
                        r = c.post(url + OPENAI, json=body)
                        outcomes.append(("plain", r.status_code, time.monotonic() - t0, r.text[:300]))
                    if outcomes[-1][1] != 200:
                        time.sleep(0.1)
                except httpx.HTTPError as e:
                    outcomes.append(("cut", type(e).__name__, time.monotonic() - t0, str(e)[:300]))
                    time.sleep(0.2)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return threads, outcomes


def _replica_actor_names(app: str) -> list[str]:
    import ray

    return [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{app}#")
    ]


def _ask(url: str) -> bool:
    r = httpx.post(url + OPENAI, json={"messages": MSG, "max_tokens": 2}, timeout=10)
    return r.status_code == 200


def _kill_under_load(url: str, kill) -> tuple[float, list[tuple]]:
    """Run load, call ``kill()``, stop the load; return (seconds until a request succeeds
    again, outcomes of requests in flight at the kill and after)."""
    stop = threading.Event()
    threads, outcomes = _load(url, 4, stop)
    try:
        wait_for(lambda: sum(o[1] == 200 for o in outcomes) >= 4, timeout=60, what="load under way")
        seen = len(outcomes)
        t_kill = time.monotonic()
        kill()
        # keep the load on while Serve recovers: new requests must get answers, not hangs
        recovered = (
            wait_for(lambda: _ask(url) and time.monotonic(), timeout=90, interval=0.3, what="recovery")
            - t_kill
        )
        wait_for(lambda: sum(o[1] == 200 for o in outcomes[seen:]) >= 2, timeout=60, what="load served again")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=70)
    assert not any(t.is_alive() for t in threads), "a client hung past its 60 s timeout"
    return recovered, outcomes[seen:]


def _check_outcomes(outcomes: list[tuple]) -> None:
    """Every request ended in bounded time as an answer, a 5xx with a body, or (a replica
    process gone mid-response) a cut connection; some succeeded after the fault."""
    for kind, status, seconds, message in outcomes:
        assert seconds < 60, (kind, status, seconds)
        if kind != "cut" and status != 200:
            assert status in (500, 502, 503, 504) and message, (kind, status, message)
    assert any(o[1] == 200 for o in outcomes)


def _summary(outcomes: list[tuple]) -> str:
    from collections import Counter

    counts = Counter((k, s) for k, s, *_ in outcomes)
    slowest = max(o[2] for o in outcomes)
    return f"{dict(counts)}, slowest {slowest:.1f} s"


def test_replica_killed_under_load_recovers(ray_serve, tiny_model):
    import ray
    from ray import serve

    _deploy("kill1", tiny_args(tiny_model))
    url = f"{ray_serve.http_url}/kill1"
    try:
        (name,) = _replica_actor_names("kill1")

        def kill() -> None:
            ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)

        recovered, outcomes = _kill_under_load(url, kill)
        print(f"\nreplica killed under load: serving again after {recovered:.1f} s; {_summary(outcomes)}")
        _check_outcomes(outcomes)
        assert recovered < 60
        new = wait_for(lambda: [n for n in _replica_actor_names("kill1") if n != name], timeout=30)
        assert new, "Serve did not start a new replica"
    finally:
        serve.delete("kill1")


def test_stage_actor_killed_under_load_recovers(ray_serve, tiny_model):
    """A sharded replica (2 pipeline stages, each a Ray actor) loses stage 1's process: its
    requests fail fast with a 503, the replica's health check (which calls every stage) fails,
    and Serve replaces the replica with fresh stages. The health check runs every second
    here; with the deployment's 10 s period Serve gives up on the replica after 3 misses, so
    expect ~30 s of fast 503s plus a model load in production."""
    from ray import serve
    from ray.util.state import list_actors

    def stages() -> list:
        return list_actors(filters=[("class_name", "=", "StageWorker"), ("state", "=", "ALIVE")], timeout=10)

    before = {a.actor_id for a in stages()}
    args = tiny_args(tiny_model, parallel={"workers": 2, "cpus_per_worker": 0.1})
    _deploy("kill2", args, health_check_period_s=1, health_check_timeout_s=5)
    url = f"{ray_serve.http_url}/kill2"
    try:
        ours = [a for a in stages() if a.actor_id not in before]
        assert len(ours) == 2, ours

        legacy: list[httpx.Response] = []

        def kill() -> None:  # the stage's worker process dies, as on a crash or an OOM kill
            os.kill(ours[-1].pid, signal.SIGKILL)
            # the legacy route fails the same way, in its own error shape
            chat = {"prompt": "hi", "generate_kwargs": {"max_new_tokens": 4}}
            legacy.append(httpx.post(url + CHAT, json=chat, timeout=30))

        recovered, outcomes = _kill_under_load(url, kill)
        print(f"\nstage actor killed under load: serving again after {recovered:.1f} s; {_summary(outcomes)}")
        _check_outcomes(outcomes)
        # the replica itself is alive: a request the dead stage failed is a 503 that says so
        # (JSON for plain requests, an error event for streams), not a bare 500
        failed = [o for o in outcomes if o[0] != "cut" and o[1] != 200]
        assert failed and all(o[1] == 503 and "generation failed" in o[3] for o in failed), failed
        print(f"a request the dead stage failed: {legacy[0].status_code} {legacy[0].text[:300]}")
        assert legacy[0].status_code == 503, legacy[0].text[:300]
        assert "generation failed" in legacy[0].json()["detail"]
        fresh = wait_for(
            lambda: [a for a in stages() if a.actor_id not in before | {x.actor_id for x in ours}]
        )
        assert len(fresh) == 2, fresh
        assert recovered < 60
    finally:
        serve.delete("kill2")
