"""The preset catalog and SKU table load as data and answer lookups."""

from __future__ import annotations

from pathlib import Path

import pytest

from presets.registry import Catalog, default_catalog, expand_vars, get_preset, get_sku

REQUIRED = {
    "phi-3-mini-4k-instruct",
    "phi-3-mini-128k-instruct",
    "phi-3-medium-4k-instruct",
    "phi-3-medium-128k-instruct",
    "phi-3.5-mini-instruct",
    "llama-3.1-8b-instruct",
    "mistral-7b-instruct",
    "qwen2.5-7b-instruct",
    "falcon-7b-instruct",
    "llama-3.1-70b-instruct",
    "tiny-phi-3",
}


def test_catalog_has_every_required_preset_with_sane_numbers():
    cat = default_catalog()
    assert set(cat.presets) >= REQUIRED
    for p in cat.presets.values():
        assert p.gpu_memory_gib >= p.weights_gib, p.name
        assert p.disk_gib >= p.weights_gib, p.name
        assert p.hf_model_id or p.model_path, p.name
    assert get_preset("phi-3-mini-128k-instruct").max_context == 131072
    assert get_preset("llama-3.1-70b-instruct").hf_auth_required
    assert not get_preset("llama-3.1-70b-instruct").supports_tuning
    assert get_preset("phi-3-mini-4k-instruct").supports_tuning
    assert get_preset("nope") is None


def test_sku_lookup_is_case_insensitive_and_knows_aliases():
    assert get_sku("standard_nc6s_v3").name == "Standard_NC6s_v3"
    assert get_sku("Standard_ND96asr_A100_v4").name == "Standard_ND96asr_v4"
    nd = get_sku("Standard_ND96asr_v4")
    assert (nd.gpu_count, nd.gpu_memory_gib, nd.total_gpu_memory_gib) == (8, 40, 320)
    assert get_sku("Standard_NC6s_v3").describe() == "1x16GiB V100"
    assert not get_sku("Standard_NC6s_v3").supports_bfloat16
    assert get_sku("Standard_NC24ads_A100_v4").supports_bfloat16
    fake = get_sku("Standard_Fake_GPU")
    assert fake.fake and fake not in default_catalog().real_skus()


def test_close_matches_for_typos():
    cat = default_catalog()
    assert cat.similar_presets("phi-3-mini-4k")[0] == "phi-3-mini-4k-instruct"
    assert "Standard_NC6s_v3" in cat.similar_skus("standard_nc6_v3")


def test_tiny_model_path_is_templated(monkeypatch):
    tiny = get_preset("tiny-phi-3")
    assert tiny.resolved_model_path({"KAITO_CACHE": "/c"}) == Path("/c/models/tiny-phi-3")
    assert tiny.resolved_model_path({}) == Path.home() / ".cache/kaito-py/models/tiny-phi-3"
    monkeypatch.setenv("KAITO_CACHE", "/x")
    assert tiny.model_source == "/x/models/tiny-phi-3"
    assert get_preset("mistral-7b-instruct").model_source == "mistralai/Mistral-7B-Instruct-v0.3"


def test_expand_vars():
    assert expand_vars("${A}/${B:-d}/${C:-}", {"A": "a", "B": ""}) == "a/d/"


def test_duplicate_entries_are_refused(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "presets:\n"
        + "".join(
            "- {name: x, hf_model_id: o/x, params_b: 1, weights_gib: 1, gpu_memory_gib: 2, disk_gib: 5,"
            " max_context: 10, dtype: float16, architecture: A, num_layers: 1, num_attention_heads: 1,"
            " num_kv_heads: 1}\n"
            for _ in range(2)
        )
    )
    (tmp_path / "s.yaml").write_text("skus: []\n")
    with pytest.raises(ValueError, match="defined twice"):
        Catalog.from_files(tmp_path / "p.yaml", tmp_path / "s.yaml")


def test_unknown_fields_in_the_data_are_errors(tmp_path):
    (tmp_path / "p.yaml").write_text("presets: []\n")
    (tmp_path / "s.yaml").write_text(
        "skus:\n- {name: S, gpu_count: 1, gpu_memory_gib: 1, gpu_model: g, cuda_compute: '8.0', vcpus: 1,"
        " memory_gib: 1, gpus: 3}\n"
    )
    with pytest.raises(ValueError, match="gpus"):
        Catalog.from_files(tmp_path / "p.yaml", tmp_path / "s.yaml")


def test_a_preset_is_found_by_its_hugging_face_id_too():
    """Kaito v0.9+ manifests name models by Hugging Face id; the seed's short names stay."""
    cat = default_catalog()
    assert cat.preset("microsoft/Phi-3-mini-4k-instruct").name == "phi-3-mini-4k-instruct"
    # the hub resolves ids in any case
    assert cat.preset("microsoft/phi-3-mini-4k-instruct").name == "phi-3-mini-4k-instruct"
    assert cat.preset("Qwen/Qwen2.5-7B-Instruct").name == "qwen2.5-7b-instruct"
    assert cat.preset("microsoft/Phi-4-mini-instruct").name == "phi-4-mini-instruct"
    assert cat.preset("phi-4-mini-instruct").hf_model_id == "microsoft/Phi-4-mini-instruct"
    assert cat.preset("microsoft/Phi-9") is None
    assert cat.similar_presets("microsoft/Phi-3-mini-4k-instrct")[0] == "microsoft/Phi-3-mini-4k-instruct"
