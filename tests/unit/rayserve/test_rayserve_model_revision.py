"""The loaders read a hub model at the spec's ``revision``, not at whatever ``main`` holds now.

Why: a preset pins the Hugging Face commit its weights come from (presets/catalog.yaml's
``revision``); a loader that drops the pin serves whatever was pushed last. The check runs real
transformers and huggingface_hub over an offline hub cache holding two commits of one repo,
``main`` pointing at the other one, so only a loader that passes ``revision`` gets the pinned model.
It runs in a subprocess, since both libraries read the cache location when imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MODELS = Path(os.environ.get("KAITO_MODELS_DIR", Path.home() / ".cache/kaito-py/models"))
REPO = "kaito-test/tiny-phi-3"
MAIN_SHA, PINNED_SHA = "a" * 40, "b" * 40

LOAD = """
import json, sys, torch
from rayserve.loading import load_config, load_model, load_tokenizer, safetensors_weight_map
from rayserve.spec import ModelSpec
spec = ModelSpec(name="m", path=sys.argv[1], revision=sys.argv[2] if len(sys.argv) > 2 else None)
config, _ = load_config(spec)
model = load_model(spec, torch.device("cpu"))
weights = safetensors_weight_map(spec.path, spec.revision)
print(json.dumps({
    "config": config.hidden_size,
    "weights": model.get_input_embeddings().weight.shape[1],
    "tokenizer": len(load_tokenizer(spec)),
    "snapshot": sorted({p.parent.name for p in weights.values()}),
}))
"""


def _hub_cache(root: Path) -> Path:
    """A hub cache of REPO with two snapshots: main = tiny-phi-3 (64 wide), the pin = h256."""
    repo = root / ("models--" + REPO.replace("/", "--"))
    for sha, model in ((MAIN_SHA, "tiny-phi-3"), (PINNED_SHA, "tiny-phi-3-h256")):
        src = MODELS / model
        if not src.is_dir():
            pytest.skip(f"{src} missing: hack/tiny_model.py makes it (hack/env.sh does)")
        shutil.copytree(src, repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(MAIN_SHA)
    return root


def _load(cache: Path, *args: str) -> dict:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    out = subprocess.run([sys.executable, "-c", LOAD, REPO, *args], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_loaders_read_the_pinned_commit_not_main(tmp_path: Path) -> None:
    cache = _hub_cache(tmp_path / "hub")
    pinned = _load(cache, PINNED_SHA)
    assert pinned["config"] == 256 and pinned["weights"] == 256, pinned
    assert pinned["snapshot"] == [PINNED_SHA], pinned  # the stage loader's files too
    assert pinned["tokenizer"] > 0
    floating = _load(cache)  # no pin: main, the other commit (what every loader did before)
    assert floating["config"] == 64 and floating["weights"] == 64 and floating["snapshot"] == [MAIN_SHA]
