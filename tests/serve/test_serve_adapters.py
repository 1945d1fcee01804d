"""LoRA adapters: trained by rayserve.tuning, served side by side on one base model, chosen
per request by model name, mixed in one batch, scaled by strength."""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import threading

import httpx
import pytest

from rayserve.adapters import BASE
from rayserve.engine import Engine
from rayserve.loading import eos_token_ids, load_config, load_tokenizer
from rayserve.pipeline import LocalPipeline
from rayserve.sampling import SamplingParams
from rayserve.sequence import FinishReason
from rayserve.spec import AdapterSpec, ModelSpec
from rayserve.text import encode, render_chat
from tests.serve.conftest import QA, tiny_args, write_dataset

pytestmark = pytest.mark.serve


def test_tuning_from_url_learns(tiny_model, tmp_path, monkeypatch):
    from rayserve.tuning import netguard
    from rayserve.tuning.train import main

    # the dataset server is on loopback, which the trainer's guard refuses (as it must in a pod:
    # tests/unit/rayserve covers that); here only the learning is under test
    monkeypatch.setattr(netguard, "url_problem", lambda url: None)
    monkeypatch.setattr(netguard, "address_problem", lambda *_: None)  # the fetch-time check of each address

    write_dataset(tmp_path / "d.jsonl", QA)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/d.jsonl"
        out = tmp_path / "adapter"
        result = main(
            [
                "--model",
                str(tiny_model),
                "--data",
                url,
                "--output",
                str(out),
                "--max-steps",
                "10",
                "--lr",
                "5e-3",
                "--rank",
                "2",
                "--target-modules",
                "qkv_proj,o_proj",
            ]
        )
    finally:
        server.shutdown()
    assert result["loss_after"] < result["loss_before"] / 2
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / "training_result.json").read_text())["steps"] == 10


def test_mixed_adapter_batch(tiny_model, adapters):
    spec = ModelSpec(name="tiny", path=str(tiny_model))
    specs = [
        AdapterSpec(name="qa", path=str(adapters["qa"])),
        AdapterSpec(name="rev", path=str(adapters["rev"])),
        AdapterSpec(name="qa-off", path=str(adapters["qa"]), strength=0.0),
    ]
    tok = load_tokenizer(spec)
    config, gen = load_config(spec)
    pipe = LocalPipeline.load(spec, specs)
    prompt = encode(tok, render_chat(tok, [("user", "what is kaito")]), chat=True)

    async def run():
        engine = Engine(pipe, eos_token_ids(config, gen, tok), max_batch_size=8, has_adapters=True)

        async def ask(adapter: str) -> str:
            params = SamplingParams(max_new_tokens=12)
            ids = [
                ev.token_id
                async for ev in engine.generate(prompt, params, adapter)
                if ev.finish_reason is not FinishReason.STOP  # the stop token (EOS) is not text
            ]
            return tok.decode(ids, skip_special_tokens=True)

        alone = {a: await ask(a) for a in (BASE, "qa", "rev", "qa-off")}
        together = await asyncio.gather(*[ask(a) for a in (BASE, "qa", "rev", "qa-off")])
        await engine.close()
        return alone, together

    alone, together = asyncio.run(run())
    assert alone["qa"] == "kaito is a fast operator"
    assert alone["rev"] == "operator fast a is kaito"
    assert alone["qa-off"] == alone[BASE] != alone["qa"]  # strength 0 = the base model
    assert together == [alone[a] for a in (BASE, "qa", "rev", "qa-off")]


def test_adapters_over_http(ray_serve, tiny_model, adapters):
    from ray import serve

    from rayserve.app import LLMServer

    args = tiny_args(
        tiny_model,
        adapters=[
            {"name": "qa", "path": str(adapters["qa"])},
            {"name": "rev", "path": str(adapters["rev"]), "strength": 1.0},
        ],
    )
    serve.run(
        LLMServer.options(ray_actor_options={"num_cpus": 0.1}).bind(args),
        name="tiny-lora",
        route_prefix="/lora",
    )
    url = ray_serve.http_url + "/lora"
    try:
        models = [m["id"] for m in httpx.get(f"{url}/v1/models", timeout=30).json()["data"]]
        assert models == ["tiny-phi-3", "qa", "rev"]

        def ask(model: str) -> str:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": "one two"}],
                "max_tokens": 10,
                "temperature": 0,
            }
            r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["message"]["content"]

        assert ask("qa") == "three four five"
        assert ask("rev") == "five four three"
        legacy = httpx.post(
            f"{url}/chat",
            timeout=60,
            json={
                "model": "qa",
                "messages": [{"role": "user", "content": "scale up"}],
                "generate_kwargs": {"do_sample": False, "max_new_tokens": 6},
            },
        )
        assert legacy.json() == {"Result": "scale down"}
    finally:
        serve.delete("tiny-lora")
