"""Resolving a model id the catalog lacks: read from a hub (hack/fake_hf_hub.py, speaking the Hub's
API) and sized from the checkpoint itself; what cannot be served gets its reason, with backoff.

The parameter counts are checked against the safetensors library reading the same files, and
tests/unit/hack/test_fake_hf_hub.py checks huggingface_hub's own count over the same server.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from safetensors import safe_open

from controller.workspace.hf_hub import HubClient
from controller.workspace.model_resolver import (
    REASON_HUB_UNREACHABLE,
    REASON_MODEL_ACCESS_DENIED,
    REASON_MODEL_NOT_FOUND,
    ModelProblem,
    ModelResolver,
    ResolvedModel,
)
from hack.fake_hf_hub import FakeHub
from hack.ports import free_port
from hack.tiny_model import DEFAULT_DIR, ensure_tiny_model
from presets.estimator import kv_bytes_per_token
from presets.hf_config import REASON_ARCHITECTURE_NOT_SUPPORTED, looks_like_hf_id

MODEL = "kaito-test/tiny-phi-3-uncatalogued"


@pytest.fixture(scope="module")
def tiny() -> Path:
    return ensure_tiny_model(DEFAULT_DIR)


@pytest.fixture
def hub(tiny: Path):  # type: ignore[no-untyped-def]
    with FakeHub() as hub:
        hub.add_repo(MODEL, tiny)
        hub.add_repo("kaito-test/gated", tiny, token="hf_right")
        yield hub


def _numel(path: Path) -> int:
    with safe_open(path, framework="np") as f:
        total = 0
        for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
            n = 1
            for d in f.get_slice(key).get_shape():
                n *= d
            total += n
        return total


def test_an_uncatalogued_model_is_sized_from_its_config_and_headers(hub: FakeHub, tiny: Path) -> None:
    resolver = ModelResolver(HubClient(hub.url))
    model, fresh = resolver.resolve(MODEL, None)
    assert fresh and isinstance(model, ResolvedModel)
    config = json.loads((tiny / "config.json").read_text())
    p = model.preset
    assert (p.name, p.hf_model_id, p.model_source) == (MODEL, MODEL, MODEL)
    assert p.architecture == "Phi3ForCausalLM" and p.dtype == config["dtype"] == "float32"
    assert p.num_layers == config["num_hidden_layers"]
    assert p.num_kv_heads == config["num_key_value_heads"]
    assert p.head_dim == config["hidden_size"] // config["num_attention_heads"]
    assert p.max_context == config["max_position_embeddings"]
    numel = _numel(tiny / "model.safetensors")
    assert round(p.params_b * 1e9) == numel
    # every weight is F32: the weights are 4 bytes a parameter, the safetensors file that plus its header
    assert p.weights_gib * 2**30 == pytest.approx(numel * 4)
    assert (tiny / "model.safetensors").stat().st_size - numel * 4 < 100_000
    per_token = kv_bytes_per_token(p, p.dtype)
    assert per_token == 2 * p.num_layers * p.num_kv_heads * p.head_dim * 4
    assert f"KV cache {per_token / 1024:g} KiB per token" in model.summary
    # one replica's GPU memory: the weights + 10%, and the KV cache of one (at most 4096-token) context
    kv_gib = per_token * min(p.max_context, 4096) / 2**30
    assert p.gpu_memory_gib == round(p.weights_gib * 1.1 + kv_gib, 4)
    assert all(part in model.summary for part in ("Phi3ForCausalLM", "F32", model.revision[:12]))
    # the weights were never downloaded: only their header (one range read)
    assert hub.bytes_served(MODEL, "model.safetensors") <= 100_001
    before = len(hub.requests)
    again, fresh = resolver.resolve(MODEL.upper(), None)  # ids are case-insensitive, as on the Hub
    assert again is model and not fresh and len(hub.requests) == before


def test_a_sharded_checkpoint_with_a_long_header_is_read_through_its_index(hub: FakeHub, tiny: Path,
                                                                           tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    repo = tmp_path / "sharded"
    repo.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny / name, repo / name)
    tensors = load_file(tiny / "model.safetensors")
    names = sorted(tensors)
    half = len(names) // 2
    # the second shard's header is longer than the first 100 kB read: a second range read follows
    import numpy as np

    padding = {f"pad.{i:05d}.a_long_tensor_name_to_grow_the_header": np.zeros(1, np.float32)
               for i in range(2000)}
    save_file({n: tensors[n] for n in names[:half]}, repo / "model-00001-of-00002.safetensors")
    save_file({**{n: tensors[n] for n in names[half:]}, **padding}, repo / "model-00002-of-00002.safetensors")
    weight_map = {n: "model-00001-of-00002.safetensors" for n in names[:half]}
    weight_map |= {n: "model-00002-of-00002.safetensors" for n in [*names[half:], *padding]}
    (repo / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    hub.add_repo("kaito-test/sharded", repo)
    model, _ = ModelResolver(HubClient(hub.url)).resolve("kaito-test/sharded", None)
    assert isinstance(model, ResolvedModel)
    assert round(model.preset.params_b * 1e9) == _numel(tiny / "model.safetensors") + len(padding)


def test_an_architecture_the_engine_does_not_serve_is_refused_with_backoff(hub: FakeHub, tiny: Path,
                                                                           tmp_path: Path) -> None:
    repo = tmp_path / "mamba"
    shutil.copytree(tiny, repo)
    config = json.loads((repo / "config.json").read_text())
    (repo / "config.json").write_text(json.dumps({**config, "architectures": ["MambaForCausalLM"]}))
    hub.add_repo("kaito-test/mamba", repo)
    clock = SimpleNamespace(now=1000.0)
    resolver = ModelResolver(HubClient(hub.url), clock=lambda: clock.now, backoff_seconds=10,
                             backoff_max_seconds=25)
    problem, fresh = resolver.resolve("kaito-test/mamba", None)
    assert fresh and isinstance(problem, ModelProblem) and problem.failed
    assert problem.reason == REASON_ARCHITECTURE_NOT_SUPPORTED
    assert "MambaForCausalLM" in problem.message and "Phi3ForCausalLM" in problem.message
    assert problem.retry_in == 10 and "attempt 1; trying again in 10s" in problem.message
    before = len(hub.requests)
    clock.now += 4
    cached, fresh = resolver.resolve("kaito-test/mamba", None)
    # within the backoff: no request, the same message (a status that changes each pass loops)
    assert not fresh and len(hub.requests) == before
    assert cached.message == problem.message and cached.retry_in == pytest.approx(6)
    clock.now += 6
    second, fresh = resolver.resolve("kaito-test/mamba", None)
    assert fresh and second.retry_in == 20 and len(hub.requests) > before
    clock.now += 20
    third, _ = resolver.resolve("kaito-test/mamba", None)
    assert third.retry_in == 25  # capped
    # fixed on the hub: resolved at the next attempt
    (repo / "config.json").write_text(json.dumps(config))
    clock.now += 25
    fixed, _ = resolver.resolve("kaito-test/mamba", None)
    assert isinstance(fixed, ResolvedModel)


def test_missing_and_gated_repos_say_what_to_do(hub: FakeHub) -> None:
    resolver = ModelResolver(HubClient(hub.url))
    missing, _ = resolver.resolve("kaito-test/does-not-exist", None)
    assert isinstance(missing, ModelProblem) and missing.reason == REASON_MODEL_NOT_FOUND
    assert hub.url in missing.message
    no_token, _ = resolver.resolve("kaito-test/gated", None)
    assert isinstance(no_token, ModelProblem) and no_token.reason == REASON_MODEL_ACCESS_DENIED
    assert "presetOptions.modelAccessSecret" in no_token.message
    empty_secret, _ = resolver.resolve("kaito-test/gated", None, secret="hf-token")
    assert "'hf-token' has no HF_TOKEN key or does not exist" in empty_secret.message
    wrong, _ = resolver.resolve("kaito-test/gated", "hf_wrong", secret="hf-token")
    assert wrong.reason == REASON_MODEL_ACCESS_DENIED
    assert "HF_TOKEN of Secret 'hf-token' has no access" in wrong.message
    granted, _ = resolver.resolve("kaito-test/gated", "hf_right", secret="hf-token")
    assert isinstance(granted, ResolvedModel) and granted.preset.hf_auth_required
    # the token went to the hub as huggingface_hub sends it, and only with the gated repo's reads
    assert any("/kaito-test/gated/resolve/" in path for _, path in hub.requests)


def test_an_unreachable_hub_is_pending_not_failed() -> None:
    resolver = ModelResolver(HubClient(f"http://127.0.0.1:{free_port()}", timeout=2))
    problem, _ = resolver.resolve(MODEL, None)
    assert isinstance(problem, ModelProblem) and problem.reason == REASON_HUB_UNREACHABLE
    assert not problem.failed and problem.retry_in == 10


@pytest.mark.parametrize(("name", "ok"), [
    ("Qwen/Qwen2.5-7B-Instruct", True), ("kaito-test/tiny_phi.3", True), ("phi-3", False),
    ("a/b/c", False), ("org/..", False), ("-org/x", False), ("org/x-", False), ("org /x", False),
])
def test_which_names_look_like_hugging_face_ids(name: str, ok: bool) -> None:
    assert looks_like_hf_id(name) is ok
