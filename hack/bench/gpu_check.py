"""GPU check: our engine in-process beside batched ``generate`` and transformers' continuous
batching, on a randomly initialised checkpoint of Phi-3-mini's shape, in bf16 on CUDA.

Why a separate script: the CPU benchmarks (``serve_bench``) measure overhead with a toy model;
whether the engine holds up where the model's compute is real needs a GPU, and GPU machines
come rarely and briefly, with torch and transformers but no Ray and no model downloads. So
this needs nothing beyond torch, transformers and pydantic (and this repository): the model is
built on the machine itself from Phi-3-mini's config with random weights (the throughput of
a shape does not depend on its weights), the engine runs without Ray or HTTP.

Per batch size (1/8/32/64 prompts submitted at once, a fixed number of new tokens, greedy):
tokens/s and median time to first token for each of the three, and the peak GPU memory each
reached. Then a greedy check: our engine's tokens against ``generate``'s for the same prompts.

``--device cpu --small`` runs the same code on a toy shape on CPU (float32), to prove the
script before a GPU is lent. Writes markdown (default docs/bench/gpu.md). Run:
``python -m hack.bench.gpu_check [--device cuda] [--small] [--batches 1,8,32,64] [--out ...]``
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

# Phi-3-mini-4k-instruct's shape (its config.json), and a toy one for --small
PHI3_MINI = {
    "vocab_size": 32064,
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
}
SMALL = {
    "vocab_size": 1024,
    "hidden_size": 256,
    "intermediate_size": 1024,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 1024,
}


@dataclass
class Row:
    """One method at one batch size."""

    method: str
    batch: int
    tokens: int
    seconds: float
    ttft: list[float] = field(default_factory=list)
    peak_bytes: int = 0

    @property
    def tps(self) -> float:
        return self.tokens / self.seconds

    @property
    def ttft_ms(self) -> float:
        return statistics.median(self.ttft) * 1000 if self.ttft else float("nan")


def build_model(shape: dict, device: torch.device, dtype: torch.dtype, init_range: float, seed: int = 0):
    """A Phi3ForCausalLM with ``shape`` and random weights, made directly on ``device``. A wider
    init than HF's 0.02 makes random logits peaked, so greedy decoding has few near-ties and
    the token-for-token check means something (as ``hack.tiny_model`` does)."""
    from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM

    config = Phi3Config(
        **shape,
        original_max_position_embeddings=shape["max_position_embeddings"],
        sliding_window=None,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=[32000 % shape["vocab_size"]],
        pad_token_id=0,
        initializer_range=init_range,
    )
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            model = Phi3ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config = GenerationConfig(do_sample=False, pad_token_id=0, bos_token_id=1)
    return model.eval()


def prompts(n: int, length: int, vocab: int, seed: int = 1) -> list[list[int]]:
    """``n`` random prompts of equal length (no padding, so every method sees the same input)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, vocab, (n, length), generator=g).tolist()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measured(device: torch.device, run: Callable[[], Row]) -> Row:
    """``run`` with the device's peak memory counter reset before and read after."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    row = run()
    if device.type == "cuda":
        row.peak_bytes = torch.cuda.max_memory_allocated(device)
    return row


# --- the three methods ---------------------------------------------------------------------
def run_engine(
    model, device: torch.device, batch: list[list[int]], n_new: int
) -> tuple[Row, list[list[int]]]:
    """Our continuous-batching engine, in-process: all prompts submitted at once."""
    from rayserve.engine import Engine
    from rayserve.params import SamplingParams
    from rayserve.pipeline import LocalPipeline
    from rayserve.stage import PipelineStage

    n_layers = model.config.num_hidden_layers
    pipeline = LocalPipeline([PipelineStage(model, 0, n_layers, device)])
    engine = Engine(pipeline, set(), max_batch_size=max(64, len(batch)), max_waiting=len(batch))
    params = SamplingParams(max_new_tokens=n_new, ignore_eos=True)

    async def one(prompt: list[int], ttft: list[float]) -> list[int]:
        t0, out = time.perf_counter(), []
        async for ev in engine.generate(prompt, params):
            if not out:
                ttft.append(time.perf_counter() - t0)
            out.append(ev.token_id)
        return out

    async def main() -> tuple[float, list[float], list[list[int]]]:
        ttft: list[float] = []
        t0 = time.perf_counter()
        outs = await asyncio.gather(*(one(p, ttft) for p in batch))
        _sync(device)
        seconds = time.perf_counter() - t0
        engine.stop()
        return seconds, ttft, outs

    seconds, ttft, outs = asyncio.run(main())
    return Row("engine", len(batch), sum(len(o) for o in outs), seconds, ttft), outs


@torch.inference_mode()
def run_generate(
    model, device: torch.device, batch: list[list[int]], n_new: int
) -> tuple[Row, list[list[int]]]:
    """One ``model.generate`` over the whole batch; time to first token is a 1-token generate."""
    ids = torch.tensor(batch, device=device)
    kw = {"do_sample": False, "eos_token_id": None, "pad_token_id": 0}
    _sync(device)
    t0 = time.perf_counter()
    model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw)
    _sync(device)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = model.generate(ids, max_new_tokens=n_new, min_new_tokens=n_new, **kw)
    _sync(device)
    seconds = time.perf_counter() - t0
    new = out[:, ids.shape[1] :].tolist()
    return Row("generate", len(batch), sum(len(o) for o in new), seconds, [first] * len(batch)), new


class HfContinuousBatching:
    """transformers' continuous batching (paged KV cache) through one manager kept for the
    whole check, as ``transformers serve`` keeps its own: its setup (cache allocation, warm-up)
    is paid once, not in every batch's time."""

    def __init__(self, model, n_new: int) -> None:
        from transformers import GenerationConfig

        cfg = GenerationConfig(max_new_tokens=n_new, do_sample=False, eos_token_id=-1, pad_token_id=0)
        self.manager = model.init_continuous_batching(generation_config=cfg)
        self.manager.start()

    def run(self, device: torch.device, batch: list[list[int]], n_new: int) -> Row:
        t0 = time.perf_counter()
        ids = set(self.manager.add_requests(inputs=batch, max_new_tokens=n_new, record_timestamps=True))
        outs = []
        while ids:
            out = self.manager.get_result(timeout=1)
            if out is None:
                if not self.manager.is_running():
                    raise RuntimeError("transformers' continuous batching thread stopped")
                continue
            if out.request_id in ids and out.is_finished():
                ids.discard(out.request_id)
                outs.append(out)
        _sync(device)
        seconds = time.perf_counter() - t0
        ttft = [o.timestamps[0] - o.created_time for o in outs if o.timestamps]
        return Row("hf-cb", len(batch), sum(len(o.generated_tokens) for o in outs), seconds, ttft)

    def close(self) -> None:
        self.manager.stop(block=True, timeout=10)


# --- the report ----------------------------------------------------------------------------
def greedy_check(model, device: torch.device, batch: list[list[int]], n_new: int) -> tuple[int, int, int]:
    """(prompts whose tokens all equal generate's, prompts, shortest common prefix)."""
    _, ours = run_engine(model, device, batch, n_new)
    _, ref = run_generate(model, device, batch, n_new)
    equal = sum(a == b for a, b in zip(ours, ref, strict=True))
    prefix = min(
        next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), n_new)
        for a, b in zip(ours, ref, strict=True)
    )
    return equal, len(batch), prefix


def render(
    rows: list[Row], check: tuple[int, int, int], a: argparse.Namespace, shape: dict, note: str
) -> str:
    import transformers

    dev = torch.cuda.get_device_name(0) if a.device == "cuda" else f"CPU ({platform.machine()})"
    flags = " --device cpu --small" if a.small else ""
    kind = "toy shape" if a.small else "Phi-3-mini shape"
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    by = {(r.method, r.batch): r for r in rows}
    batches = sorted({r.batch for r in rows})
    lines = [
        "# GPU check: our engine vs batched `generate` vs transformers' continuous batching",
        "",
        f"Generated by `python -m hack.bench.gpu_check{flags}` on {stamp}.",
        f"Device: {dev}; {versions}; dtype {a.dtype}.",
        f"Model: random-init Phi-3 ({kind}: hidden {shape['hidden_size']}, "
        f"{shape['num_hidden_layers']} layers, vocab {shape['vocab_size']}), built on the machine itself.",
        f"Each prompt: {a.prompt_len} random tokens; {a.tokens} new tokens, greedy, eos ignored; "
        "all prompts of a batch submitted at once.",
        "",
        "- **engine**: our continuous-batching engine in-process (no Ray, no HTTP).",
        "- **generate**: one `model.generate` call over the batch (TTFT: a 1-token `generate`).",
        "- **hf-cb**: transformers' continuous batching (paged KV cache), one manager kept for the run.",
        "",
        "| batch | engine tok/s | generate tok/s | hf-cb tok/s | engine TTFT ms | generate TTFT ms "
        "| hf-cb TTFT ms | engine peak GiB | generate peak GiB | hf-cb peak GiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def gib(n: int) -> str:
        return f"{n / 2**30:.2f}" if a.device == "cuda" else "-"

    for b in batches:
        e, g, h = by[("engine", b)], by[("generate", b)], by[("hf-cb", b)]
        lines.append(
            f"| {b} | {e.tps:.0f} | {g.tps:.0f} | {h.tps:.0f} "
            f"| {e.ttft_ms:.0f} | {g.ttft_ms:.0f} | {h.ttft_ms:.0f} "
            f"| {gib(e.peak_bytes)} | {gib(g.peak_bytes)} | {gib(h.peak_bytes)} |"
        )
    equal, total, prefix = check
    lines += [
        "",
        f"Greedy check: {equal} of {total} prompts give exactly `generate`'s {a.tokens} tokens; the shortest "
        f"common prefix is {prefix} tokens (random weights in reduced precision have near-ties, where a "
        "different kernel or batch layout may pick the other token).",
        "",
    ]
    if note:
        lines += [note, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--small", action="store_true", help="a toy shape (for a CPU run)")
    p.add_argument("--batches", default="1,8,32,64")
    p.add_argument("--tokens", type=int, default=None, help="new tokens per prompt (128; 16 with --small)")
    p.add_argument("--prompt-len", type=int, default=None, help="prompt tokens (128; 16 with --small)")
    p.add_argument("--init-range", type=float, default=0.1, help="std of the random weights")
    p.add_argument("--note", default="", help="a paragraph to add at the end")
    p.add_argument("--out", default="docs/bench/gpu.md")
    a = p.parse_args(argv)
    a.tokens = a.tokens or (16 if a.small else 128)
    a.prompt_len = a.prompt_len or (16 if a.small else 128)
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run with --device cpu --small")
    device = torch.device(a.device, 0) if a.device == "cuda" else torch.device("cpu")
    dtype = torch.bfloat16 if a.device == "cuda" else torch.float32
    a.dtype = str(dtype).removeprefix("torch.")
    shape = SMALL if a.small else PHI3_MINI
    model = build_model(shape, device, dtype, a.init_range)
    print(
        f"model built on {device}: {sum(t.numel() for t in model.parameters()) / 1e6:.0f}M parameters",
        flush=True,
    )
    rows: list[Row] = []
    warm = prompts(2, a.prompt_len, shape["vocab_size"], seed=99)
    run_engine(model, device, warm, 4)
    run_generate(model, device, warm, 4)
    hf = HfContinuousBatching(model, a.tokens)
    hf.run(device, warm, 4)
    for b in [int(x) for x in a.batches.split(",")]:
        batch = prompts(b, a.prompt_len, shape["vocab_size"])
        for name, run in (
            ("engine", lambda batch=batch: run_engine(model, device, batch, a.tokens)[0]),
            ("generate", lambda batch=batch: run_generate(model, device, batch, a.tokens)[0]),
            ("hf-cb", lambda batch=batch: hf.run(device, batch, a.tokens)),
        ):
            row = _measured(device, run)
            rows.append(row)
            print(
                f"{name:>8} batch {b:<3} {row.tps:9.0f} tok/s  TTFT {row.ttft_ms:8.1f} ms  "
                f"peak {row.peak_bytes / 2**30:.2f} GiB",
                flush=True,
            )
    hf.close()
    check = greedy_check(model, device, prompts(8, a.prompt_len, shape["vocab_size"], seed=7), a.tokens)
    print(f"greedy: {check[0]}/{check[1]} equal, common prefix {check[2]}", flush=True)
    text = render(rows, check, a, shape, a.note)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
