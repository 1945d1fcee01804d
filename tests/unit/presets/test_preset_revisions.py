"""Every hub preset is pinned to the commit Kaito v0.12 pins, or says that it floats.

Why: without a pin the pods load whatever the repo's main branch holds when they start, so a push
upstream silently changes the served model (issue 11, item 7). The SHAs are Kaito's own
(tests/data/kaito_v0.12_examples/supported_models.yaml, copied unchanged): none is made up here.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from controller.api.validation import unpinned_warning, validate_workspace_object
from presets.registry import default_catalog

KAITO = Path(__file__).resolve().parents[2] / "data" / "kaito_v0.12_examples" / "supported_models.yaml"
COMMIT = re.compile(r"https://huggingface\.co/(?P<repo>.+)/commit/(?P<sha>[0-9a-f]{40})")


def kaito_pins() -> dict[str, str]:
    """Hugging Face id (lower case) -> the commit Kaito v0.12 pins it to."""
    pins = {}
    for model in yaml.safe_load(KAITO.read_text())["models"]:
        if match := COMMIT.fullmatch(model.get("version") or ""):
            pins[match["repo"].lower()] = match["sha"]
    return pins


def test_every_hub_preset_has_kaitos_pin_or_says_it_has_none() -> None:
    pins, hub = kaito_pins(), [p for p in default_catalog().presets.values() if p.hf_model_id]
    assert len(pins) == 30
    for preset in hub:
        # the field is written out for every hub preset: "null" is a statement, not an omission
        assert "revision" in preset.model_fields_set, f"{preset.name}: no revision line"
        assert preset.revision == pins.get(preset.hf_model_id.lower()), preset.name
    assert {p.hf_model_id.lower() for p in hub if p.revision} == set(pins)  # all 30 of Kaito's used


def test_a_local_checkpoint_has_no_revision_and_an_unpinned_preset_is_warned_of() -> None:
    catalog = default_catalog()
    assert catalog.preset("tiny-phi-3").model_revision is None  # a directory has no commits
    pinned = catalog.preset("phi-3-mini-4k-instruct")
    assert pinned.model_revision == "0a67737cc96d2554230f90338b163bc6380a2a85"
    assert unpinned_warning(pinned) is None
    floating = catalog.preset("qwen2.5-7b-instruct")
    assert floating.revision is None
    warning = unpinned_warning(floating)
    assert warning and "not pinned" in warning and "Qwen/Qwen2.5-7B-Instruct" in warning

    def admitted(preset: str) -> list[str]:
        resource = {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}}
        result = validate_workspace_object({
            "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
            "metadata": {"name": "w", "namespace": "n"},
            "resource": resource, "inference": {"preset": {"name": preset}}})
        assert result.allowed, result.message
        return result.warnings

    assert not any("not pinned" in w for w in admitted("phi-3-mini-4k-instruct"))
    assert any("not pinned" in w for w in admitted("qwen2.5-7b-instruct"))
