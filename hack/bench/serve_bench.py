"""Benchmark: our Ray Serve endpoint beside ``transformers serve --continuous-batching`` and the
raw batched-``generate`` limit, in one run, on one checkpoint, with one HTTP client.

Why these columns: ``transformers serve`` is the library's own continuous-batching server
(paged KV cache), so it is the bar a served stack built on transformers has to clear; a batch
of ``c`` prompts through one ``model.generate`` call, with no server at all, is the most the
model gives at concurrency ``c`` on this machine. Both servers get the same chat request
(``POST /v1/chat/completions``, greedy, a fixed number of new tokens with eos ignored) from
the same ``httpx`` client. A fourth column runs our engine in-process (no Ray, no HTTP): the
gap between it and the served column is what Serve, HTTP and the replica's event loop cost.

Writes a markdown table (default docs/bench/serve.md). Run:
``python -m hack.bench.serve_bench [--model DIR] [--tokens 32] [--out docs/bench/serve.md]``
(the default model is a hidden-256 tiny Phi-3, generated if needed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from hack.ports import free_port

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROMPTS = [
    f"{a} model {b} cluster" for a in ("one", "two", "three", "four") for b in ("fast", "slow", "tiny")
]
# a checkpoint big enough that compute is not all overhead (the shape)
BENCH_MODEL = {"hidden": 256, "intermediate": 1024, "vocab": 1024, "max_positions": 1024}
Call = Callable[[str], Awaitable[int]]


@dataclass
class Result:
    name: str
    concurrency: int
    requests: int
    tokens: int
    seconds: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def tps(self) -> float:
        return self.tokens / self.seconds

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000


async def drive(
    name: str, call: Callable[[str], Awaitable[int]], concurrency: int, per_client: int
) -> Result:
    """``concurrency`` clients, each sending ``per_client`` requests back to back."""
    latencies: list[float] = []
    tokens = 0

    async def client(i: int) -> None:
        nonlocal tokens
        for j in range(per_client):
            t0 = time.perf_counter()
            n = await call(PROMPTS[(i + j) % len(PROMPTS)])  # not `tokens += await`: lost updates
            tokens += n
            latencies.append(time.perf_counter() - t0)

    for p in PROMPTS[:3]:  # warm-up (first generate calls pay one-off costs)
        await call(p)
    t0 = time.perf_counter()
    await asyncio.gather(*[client(i) for i in range(concurrency)])
    return Result(name, concurrency, concurrency * per_client, tokens, time.perf_counter() - t0, latencies)


def batched_generate(model_path: str, n_tokens: int) -> Callable[[list[str]], int]:
    """The limit: ``c`` chat prompts, left-padded into one batch, through one ``generate`` call
    (no server, no scheduling: every row starts and ends together)."""
    import torch

    from rayserve.loading import load_model, load_tokenizer
    from rayserve.spec import ModelSpec

    spec = ModelSpec(name="tiny", path=model_path)
    tok, model = load_tokenizer(spec), load_model(spec)  # same device and dtype rule as the engine
    tok.padding_side = "left"

    def run(prompts: list[str]) -> int:
        texts = [chat_text(tok, p) for p in prompts]
        batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            out = model.generate(
                **batch, max_new_tokens=n_tokens, min_new_tokens=n_tokens, do_sample=False, eos_token_id=None
            )
        return int(out.shape[1] - batch.input_ids.shape[1]) * len(prompts)

    return run


def chat_text(tok, prompt: str) -> str:
    return tok.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )


def drive_batched(run: Callable[[list[str]], int], concurrency: int, rounds: int) -> Result:
    """``rounds`` batches of ``concurrency`` prompts; each row's latency is its batch's time."""
    run(PROMPTS[:concurrency])  # warm-up
    latencies, tokens, t0 = [], 0, time.perf_counter()
    for r in range(rounds):
        prompts = [PROMPTS[(r + i) % len(PROMPTS)] for i in range(concurrency)]
        t = time.perf_counter()
        tokens += run(prompts)
        latencies += [time.perf_counter() - t] * concurrency
    return Result("generate", concurrency, concurrency * rounds, tokens, time.perf_counter() - t0, latencies)


def engine_direct(model_path: str, n_tokens: int, max_batch: int) -> Callable[[str], Awaitable[int]]:
    """Our engine in this process: continuous batching, no Ray, no HTTP."""
    from rayserve.sampling import SamplingParams
    from rayserve.service import LLMService, PreparedRequest
    from rayserve.spec import ServeArgs

    args = ServeArgs.model_validate(
        {
            "model": {"name": "tiny", "path": model_path},
            "parallel": {"workers": 1, "gpus_per_worker": _gpus()},
            "engine": {"max_batch_size": max_batch, "max_waiting": 1024},
        }
    )
    svc = LLMService(args)
    params = SamplingParams(max_new_tokens=n_tokens, ignore_eos=True)

    async def call(prompt: str) -> int:
        ids = svc.tokenizer(chat_text(svc.tokenizer, prompt), add_special_tokens=False)["input_ids"]
        out = await svc.complete(PreparedRequest(ids, params))
        return out.completion_tokens

    return call


def _gpus() -> int:
    import torch

    return 1 if torch.cuda.is_available() else 0


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"


def http_client(port: int):
    """The one client every server gets: the same pool, timeouts and JSON handling."""
    import httpx

    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=300, limits=httpx.Limits(max_connections=128)
    )


def chat_call(client, body: dict) -> Call:
    """``POST /v1/chat/completions`` with ``body`` plus the prompt; the usage's token count."""

    async def call(prompt: str) -> int:
        r = await client.post(
            "/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": prompt}]}
        )
        r.raise_for_status()
        return r.json()["usage"]["completion_tokens"]

    return call


def served_endpoint(
    model_path: str,
    n_tokens: int,
    max_batch: int,
    num_cpus: int,
    replica_env: dict[str, str] | None = None,
    replica_cpus: float | None = None,
    haproxy: bool = False,
) -> tuple[Call, Callable[[], None]]:
    """Our Ray Serve app over HTTP (one replica), like a client in the cluster sees it.

    The replica is given the machine's cores (``replica_cpus``, default all of them), as
    ``transformers serve`` has them: Ray sets a replica's torch threads (OMP_NUM_THREADS) to the
    CPUs it was assigned, so a fractional CPU would run the forwards on one thread. ``haproxy``:
    Serve's HAProxy ingress (``rayserve.spec.HAPROXY_ENV``, the operator's ``--serve-haproxy``).
    """
    import ray
    from ray import serve

    from hack.kuberay_standin.ray_head import haproxy_env
    from rayserve.app import LLMServer
    from rayserve.spec import CLUSTER_ENV, HAPROXY_ENV, REPLICA_ENV

    port = free_port()
    # the cluster-wide Serve settings the controller puts in every Ray container: ray.init starts
    # the local raylet, and so Serve's proxy (HAProxy), with this process's environment
    for key in HAPROXY_ENV:  # a previous server's, in this process
        os.environ.pop(key, None)
    own = haproxy_env() if haproxy else {}  # HAProxy's files and ports, for this Ray alone
    os.environ.update({**CLUSTER_ENV, **(HAPROXY_ENV if haproxy else {}), **own})
    ray.init(
        num_cpus=num_cpus,
        num_gpus=_gpus(),
        object_store_memory=100 * 2**20,
        include_dashboard=False,
        log_to_driver=False,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    args = {
        "model": {"name": "tiny", "path": model_path},
        "parallel": {"workers": 1, "gpus_per_worker": 0},
        "engine": {"max_batch_size": max_batch, "max_waiting": 1024},
    }
    env = REPLICA_ENV if replica_env is None else replica_env
    cpus = (os.cpu_count() or 1) if replica_cpus is None else replica_cpus
    options = {"num_cpus": cpus, "runtime_env": {"env_vars": env}}
    app = LLMServer.options(ray_actor_options=options, max_ongoing_requests=max_batch + 64)
    serve.run(app.bind(args), name="bench", route_prefix="/")
    body = {"model": "tiny", "max_tokens": n_tokens, "temperature": 0, "ignore_eos": True}

    def close() -> None:
        serve.shutdown()
        ray.shutdown()
        if own:
            shutil.rmtree(own["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"], ignore_errors=True)
            for key in own:  # the next server in this process starts without this Ray's paths
                os.environ.pop(key, None)

    return chat_call(http_client(port), body), close


def hf_serve_endpoint(model_path: str, n_tokens: int) -> tuple[Call, Callable[[], None]]:
    """``transformers serve --continuous-batching`` on the same checkpoint, as its CLI starts it.
    Eos is ignored as in the other columns: a request's ``generation_config`` with no eos id
    (continuous batching takes ``-1`` as none)."""
    import httpx

    port = free_port()
    exe = Path(sys.executable).with_name("transformers")
    cmd = [str(exe), "serve", model_path, "--continuous-batching", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--device", "auto" if _gpus() else "cpu", "--log-level", "error"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"transformers serve did not start: {' '.join(cmd)}")
        time.sleep(0.5)
    gen = {"max_new_tokens": n_tokens, "do_sample": False, "eos_token_id": -1}
    body = {
        "model": model_path,
        "max_tokens": n_tokens,
        "temperature": 0,
        "generation_config": json.dumps(gen),
    }

    def close() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()

    return chat_call(http_client(port), body), close


def render(
    results: dict[str, list[Result]],
    n_tokens: int,
    model_path: str,
    load: tuple[float, float],
    note: str,
) -> str:
    import torch
    import transformers
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_path)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    shape = f"hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, {cfg.num_attention_heads} heads"
    lines = [
        "# Serving benchmark: our endpoint vs `transformers serve` vs batched `generate`",
        "",
        f"Generated by `python -m hack.bench.serve_bench` on {stamp}.",
        f"Machine: {os.cpu_count()} CPU cores ({platform.machine()}), {_device()};",
        f"torch {torch.__version__}, transformers {transformers.__version__}.",
        f"Shared with other work (1-min load average {load[0]:.1f} before, {load[1]:.1f} after), so absolute",
        "numbers are noisy - compare columns within one run.",
        f"Model: `{Path(model_path).name}` ({shape}, vocab {cfg.vocab_size}), dtype 'auto'",
        "(float32 on CPU, bfloat16 on GPU).",
        f"Each request: one short chat message, {n_tokens} generated tokens (greedy, eos ignored).",
        "",
        "Each cell is the best of its rounds; every round runs every column, and each server runs",
        "alone (started for its turn, stopped after it).",
        "",
        "- **hf serve**: `transformers serve --continuous-batching`, `POST /v1/chat/completions`.",
        "- **served**: our Ray Serve app (one replica, given the machine's cores as hf serve has them),",
        "  `POST /v1/chat/completions`, same client, behind Serve's Python proxy (the default).",
        "- **haproxy**: the same, behind Serve's HAProxy ingress (`kaito-controller --serve-haproxy`).",
        "- **generate**: the limit - `c` prompts as one left-padded batch through `model.generate`.",
        "- **engine**: our continuous-batching engine in-process, no Ray, no HTTP.",
        "",
        "| clients | hf serve tok/s | served tok/s | haproxy tok/s | generate tok/s | engine tok/s "
        "| hf p50 ms | served p50 ms | haproxy p50 ms | served / hf | haproxy / hf "
        "| served / generate | haproxy / generate |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = zip(results["hf"], results["served"], results["haproxy"], results["generate"], results["engine"],
               strict=True)
    for hf, srv, hap, gen, eng in rows:
        lines.append(
            f"| {srv.concurrency} | {hf.tps:.0f} | {srv.tps:.0f} | {hap.tps:.0f} | {gen.tps:.0f} "
            f"| {eng.tps:.0f} "
            f"| {hf.p50_ms:.0f} | {srv.p50_ms:.0f} | {hap.p50_ms:.0f} | {srv.tps / hf.tps:.2f}x "
            f"| {hap.tps / hf.tps:.2f}x | {srv.tps / gen.tps:.2f}x | {hap.tps / gen.tps:.2f}x |"
        )
    lines += ["", *targets(results), ""]
    lines += ["", note, ""] if note else [""]
    lines += [
        "The peak host memory of loading one pipeline stage is in [stage_memory.md](stage_memory.md).",
        "",
    ]
    return "\n".join(lines)


def targets(results: dict[str, list[Result]]) -> list[str]:
    """Issue 15's done-when, checked against this run, for each served column."""
    by = {name: {r.concurrency: r for r in rs} for name, rs in results.items()}

    def tps(name: str, peer: str, c: int) -> float:
        return by[name][c].tps / by[peer][c].tps

    def p50(name: str, peer: str, c: int) -> float:
        return by[name][c].p50_ms / by[peer][c].p50_ms

    checks = [  # (what, clients, ratio, peer, bar; a p50 ratio must stay under its bar)
        ("tok/s at 8 clients / hf serve's >= 1.2", 8, tps, "hf", 1.2),
        ("tok/s at 32 clients / hf serve's >= 1.2", 32, tps, "hf", 1.2),
        ("tok/s at 8 clients / batched generate's >= 0.7", 8, tps, "generate", 0.7),
        ("p50 at 1 client / hf serve's <= 1.1", 1, p50, "hf", 1.1),
    ]
    out = ["## Against issue 15's done-when (this run)", "", "| target | served | haproxy |", "|---|---|---|"]
    for what, c, ratio, peer, bar in checks:
        if c not in by[peer]:
            continue
        cells = []
        for name in ("served", "haproxy"):
            value = ratio(name, peer, c)
            met = value <= bar if ratio is p50 else value >= bar
            cells.append(f"{value:.2f}x {'met' if met else '**missed**'}")
        out.append(f"| {what} | {' | '.join(cells)} |")
    return out


Server = Callable[[], tuple[Call, Callable[[], None]]]


def _keep_best(best: dict[tuple[str, int], Result], r: Result) -> None:
    key = (r.name, r.concurrency)
    if key not in best or r.tps > best[key].tps:
        best[key] = r
        print(f"{r.name:>8} c={r.concurrency:<3} {r.tps:8.0f} tok/s p50 {r.p50_ms:7.1f} ms", flush=True)


def bench_all(
    servers: dict[str, Server],
    engine: Call,
    generate: Callable[[list[str]], int],
    levels: list[int],
    per_client: int,
    repeats: int,
) -> dict[str, list[Result]]:
    """Each round runs every column at every level; each cell keeps its best round (the
    machine is shared, and a burst of someone else's work should not decide a column). Each
    server runs alone: it is started for its turn and stopped after it, so neither server's
    idle processes (Ray's, on two cores, are not free) weigh on the other's figures."""
    best: dict[tuple[str, int], Result] = {}
    # one event loop for the whole run: the in-process engine and the clients bind to it
    loop = asyncio.new_event_loop()

    def rounds(c: int) -> int:
        return per_client if c > 1 else per_client * 4

    for _ in range(repeats):
        for name, start in servers.items():
            call, close = start()
            try:
                for c in levels:
                    _keep_best(best, loop.run_until_complete(drive(name, call, c, rounds(c))))
            finally:
                close()
        for c in levels:
            _keep_best(best, drive_batched(generate, c, rounds(c)))
            _keep_best(best, loop.run_until_complete(drive("engine", engine, c, rounds(c))))
    loop.close()
    names = [*servers, "generate", "engine"]
    return {n: [best[(n, c)] for c in levels] for n in names}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="checkpoint dir (default: a hidden-256 tiny Phi-3)")
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--requests-per-client", type=int, default=4)
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--num-cpus", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2, help="rounds per cell; the best is reported")
    p.add_argument("--note", default="", help="a paragraph to add under the table")
    p.add_argument("--out", default="docs/bench/serve.md")
    a = p.parse_args(argv)
    if a.model is None:
        from hack.tiny_model import DEFAULT_DIR, TinyModelParams, ensure_tiny_model

        a.model = str(
            ensure_tiny_model(DEFAULT_DIR.with_name("tiny-phi-3-h256"), TinyModelParams(**BENCH_MODEL))
        )
    levels = [int(x) for x in a.concurrency.split(",")]
    load_before = os.getloadavg()[0]
    servers: dict[str, Server] = {
        "hf": lambda: hf_serve_endpoint(a.model, a.tokens),
        "served": lambda: served_endpoint(a.model, a.tokens, a.max_batch, a.num_cpus),
        "haproxy": lambda: served_endpoint(a.model, a.tokens, a.max_batch, a.num_cpus, haproxy=True),
    }
    engine, generate = engine_direct(a.model, a.tokens, a.max_batch), batched_generate(a.model, a.tokens)
    results = bench_all(servers, engine, generate, levels, a.requests_per_client, a.repeats)
    text = render(results, a.tokens, a.model, (load_before, os.getloadavg()[0]), a.note)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
