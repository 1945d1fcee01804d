"""Benchmark: peak host memory of loading one pipeline stage, full load + prune vs partial load.

Why: a stage actor used to run ``from_pretrained`` on the whole checkpoint and then drop the
layers it does not own, so every actor of an N-stage replica needed the whole model in RAM
while loading. ``rayserve.loading.load_stage_model`` reads only the stage's share. This
measures both, side by side, for every stage of an N-stage split.

Each measurement runs in a fresh subprocess (peak RSS is a high-water mark, so loads must
not share a process) and reports its peak RSS (``VmHWM``), which includes the checkpoint
pages a load touched through safetensors' mmap. A third subprocess does everything but the weights
(imports, config, the model built on the meta device): its peak is the floor every load
pays, and "above floor" is what the weights cost.

Models: the default tiny Phi-3 and a bigger generated one (``hack.tiny_model`` at hidden
1024, 16 layers: ~270M parameters, ~1 GB in float32), both float32 checkpoints, loaded on
CPU as float32 (the checkpoint's dtype) and the big one also as bfloat16: whether the load
converts dtypes decides what the old path costs (see the "Reading it" note it writes).

Run: ``python -m hack.bench.stage_memory [--stages 4] [--big-hidden 1024] [--big-layers 16]
[--out docs/bench/stage_memory.md]``; the table replaces its own section of ``--out`` (or is
appended) and leaves the rest of the file alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SECTION = "## Pipeline stage load: peak host memory"


@dataclass
class Measure:
    """One subprocess's result."""

    peak_mb: float
    seconds: float
    kept_mb: float  # bytes of the parameters the stage holds after pruning


@dataclass
class Case:
    """One model loaded in one dtype: its floor and (range, old, new) per stage."""

    model: Path
    dtype: str
    floor: Measure
    rows: list[tuple[tuple[int, int], Measure, Measure]]


def child(mode: str, model: str, dtype: str, start: int, end: int) -> dict:
    """Body of a measuring subprocess: load stage ``[start, end)`` the ``mode`` way, then read
    every weight it kept once (as its first forward would: mmap-backed weights only become
    resident when touched)."""
    import torch

    from rayserve.loading import load_model, load_stage_model
    from rayserve.spec import ModelSpec
    from rayserve.stage import PipelineStage

    spec, cpu = ModelSpec(name="bench", path=model, dtype=dtype), torch.device("cpu")
    _floor(spec)
    t0, kept = time.perf_counter(), 0
    if mode != "floor":
        old = mode == "old"
        loaded = load_model(spec, cpu, move=False) if old else load_stage_model(spec, start, end, cpu)
        stage = PipelineStage(loaded, start, end, cpu, prune=True)
        for p in stage.model.parameters():
            kept += p.numel() * p.element_size()
            p.float().sum()
    seconds = time.perf_counter() - t0
    return {"peak_mb": _peak_rss_kib() / 1024, "seconds": seconds, "kept_mb": kept / 2**20}


def _peak_rss_kib() -> int:
    """This process's peak RSS: ``VmHWM`` of /proc/self/status.

    Why not ``getrusage(...).ru_maxrss``: Linux carries it across ``execve``, so a child
    reports its parent's peak when that was higher (here: the parent that generated the big
    checkpoint). ``VmHWM`` belongs to the process's own address space.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _floor(spec) -> None:
    """What every load pays besides the weights: imports, the config, the modeling code (a
    model built on the meta device). Every mode runs it first, so load times exclude it."""
    import torch
    from transformers import AutoModelForCausalLM

    from rayserve.loading import load_config

    config, _ = load_config(spec)
    with torch.device("meta"):
        AutoModelForCausalLM.from_config(config)


def measure(mode: str, model: Path, dtype: str, start: int = 0, end: int = 0) -> Measure:
    """Run ``child`` in a fresh interpreter and parse its one JSON line."""
    cmd = [sys.executable, "-m", "hack.bench.stage_memory", "--child", mode, "--model", str(model)]
    cmd += ["--dtype", dtype, "--start", str(start), "--end", str(end)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return Measure(**json.loads(out.strip().splitlines()[-1]))


def bench_case(model: Path, dtype: str, stages: int) -> Case:
    """The floor, then old and new (alternating) for every stage of a ``stages``-way split."""
    from transformers import AutoConfig

    from rayserve.stage import split_layers

    case = Case(model, dtype, measure("floor", model, dtype), [])
    for a, b in split_layers(AutoConfig.from_pretrained(model).num_hidden_layers, stages):
        old, new = measure("old", model, dtype, a, b), measure("new", model, dtype, a, b)
        print(
            f"{model.name} {dtype} [{a},{b}) old {old.peak_mb:.0f} MB, new {new.peak_mb:.0f} MB", flush=True
        )
        case.rows.append(((a, b), old, new))
    return case


def describe(model: Path) -> str:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model)
    size = sum(f.stat().st_size for f in model.glob("*.safetensors")) / 2**20
    return (
        f"`{model.name}`: hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, "
        f"intermediate {cfg.intermediate_size}, vocab {cfg.vocab_size}; {size:.0f} MB of "
        f"{str(cfg.dtype).removeprefix('torch.')} safetensors"
    )


def render(cases: list[Case], stages: int, load: tuple[float, float]) -> str:
    import torch

    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        SECTION,
        "",
        f"Generated by `python -m hack.bench.stage_memory` on {stamp}; {os.cpu_count()} CPU cores",
        f"({platform.machine()}), torch {torch.__version__}, CPU; 1-min load average {load[0]:.1f} before,",
        f"{load[1]:.1f} after. One stage of a {stages}-stage split per row, each load in a fresh process,",
        "followed by one read of every weight the stage kept (as its first forward would do).",
        "Peak = `VmHWM`, which includes checkpoint pages read through mmap.",
        "**old**: `from_pretrained` of the whole checkpoint, then prune (what a stage actor did).",
        "**new**: `load_stage_model`, parameters on meta, only the stage's tensors read.",
        "Floor = a process that did everything but the weights (imports, config, the model built on",
        "the meta device); the ratio compares peaks above the floor, i.e. what the weights cost.",
        "",
        "| model | load dtype | stage | kept weights (MB) | old peak (MB) | new peak (MB) "
        "| old above floor (MB) | new above floor (MB) | old / new above floor | old (s) | new (s) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        for (a, b), old, new in case.rows:
            above_old, above_new = old.peak_mb - case.floor.peak_mb, new.peak_mb - case.floor.peak_mb
            ratio = f"{above_old / above_new:.1f}x" if above_new >= 5 else "- (noise)"
            lines.append(
                f"| {case.model.name} | {case.dtype} | [{a}, {b}) | {new.kept_mb:.1f} | {old.peak_mb:.0f} "
                f"| {new.peak_mb:.0f} | {above_old:.0f} | {above_new:.0f} | {ratio} "
                f"| {old.seconds:.2f} | {new.seconds:.2f} |"
            )
    lines.append("")
    models = {c.model: c.floor for c in cases}
    lines += [f"- {describe(m)}; floor {floor.peak_mb:.0f} MB" for m, floor in models.items()]
    lines += [
        "",
        "Reading it: when the load dtype differs from the checkpoint's (here float32 -> bfloat16; in",
        "production e.g. a float32 checkpoint served in bfloat16 on a GPU, or bfloat16 in float16),",
        "`from_pretrained` converts every tensor: the old path read the whole file and held the whole",
        "converted model whichever stage loaded, the new one reads only the stage's tensors (their",
        "checkpoint pages count in its peak, plus the converted copy; the first and last stages also",
        "hold the embedding / LM head). When the dtypes match, transformers 5 maps the safetensors",
        "file and leaves the weights on disk until touched, so on CPU the old path's peak was already",
        "about the stage's share; the new path does not depend on that, and on a GPU it reads each",
        "tensor straight onto the device.",
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str, heading: str = SECTION) -> None:
    """Replace the section under ``heading`` of ``path`` (up to the next ``## `` heading), or
    append it; everything else in the file stays as it was."""
    text = path.read_text() if path.exists() else ""
    start = text.find(heading)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section if text else section
    else:
        nxt = text.find("\n## ", start + len(heading))
        text = text[:start] + section + (text[nxt + 1 :] if nxt >= 0 else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stages", type=int, default=4)
    p.add_argument("--big-hidden", type=int, default=1024, help="0: only the tiny model")
    p.add_argument("--big-layers", type=int, default=16)
    p.add_argument("--out", default="docs/bench/stage_memory.md")
    p.add_argument("--child", choices=["old", "new", "floor"], help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    p.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--end", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child, a.model, a.dtype, a.start, a.end)))
        return

    from hack.tiny_model import DEFAULT_DIR, TinyModelParams, ensure_tiny_model

    plan = [(ensure_tiny_model(), "float32")]
    if a.big_hidden:
        params = TinyModelParams(
            hidden=a.big_hidden, layers=a.big_layers, heads=16, intermediate=4 * a.big_hidden
        )
        big = ensure_tiny_model(DEFAULT_DIR.parent / f"bench-phi-3-h{a.big_hidden}-l{a.big_layers}", params)
        plan += [(big, "float32"), (big, "bfloat16")]
    load_before = os.getloadavg()[0]
    cases = [bench_case(model, dtype, a.stages) for model, dtype in plan]
    section = render(cases, a.stages, (load_before, os.getloadavg()[0]))
    write_section(Path(a.out), section)
    print(section)


if __name__ == "__main__":
    main()
