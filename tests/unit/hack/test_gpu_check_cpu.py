"""The GPU check (``hack/bench/gpu_check.py``) runs end to end, on CPU and a toy shape.

Why in CI: the script exists for the rare sessions that are lent a GPU machine, briefly, with
torch and transformers and nothing else. A script that broke since it last ran (an engine
signature, transformers' continuous-batching API) would spend that GPU time failing; this runs
the same code path, every column and the greedy check, on the CPU we always have."""

from __future__ import annotations

import re

from hack.bench import gpu_check


def test_gpu_check_runs_every_column_on_cpu(tmp_path):
    out = tmp_path / "gpu.md"
    gpu_check.main(["--device", "cpu", "--small", "--batches", "1,4", "--tokens", "8", "--out", str(out)])
    text = out.read_text()
    rows = re.findall(r"^\| (\d+) \| (\d+) \| (\d+) \| (\d+) \|", text, re.M)
    assert [int(r[0]) for r in rows] == [1, 4], text
    assert all(int(tps) > 0 for r in rows for tps in r[1:]), rows  # engine, generate, hf-cb
    check = re.search(r"Greedy check: (\d+) of (\d+) prompts give exactly `generate`'s 8 tokens", text)
    assert check is not None, text
    assert check.group(1) == check.group(2) == "8"  # float32 on CPU: no near-ties to excuse
