"""A Workspace per proven architecture, from its preset name to decoded tokens, with a tiny
stand-in checkpoint in the Hugging Face cache under the model's own id.

Why: the proofs (tests/unit/rayserve/test_rayserve_architectures.py) load checkpoints by path;
a real Workspace names a preset, the controller's serve config carries its Hugging Face id, and
the serve replica resolves that id through the hub cache (offline here). This checks the whole
chain for one catalog preset per served architecture: webhook rules, plan, serve config, model
spec, loading by id, and the engine's tokens against ``generate``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ws_unit_helpers import workspace

from controller.api.validation import validate_workspace
from controller.workspace.plan import plan_for
from controller.workspace.serveconfig import build_serve_config
from presets.registry import default_catalog
from rayserve.pipeline import LocalPipeline
from rayserve.spec import ModelSpec
from tests.unit.rayserve.test_rayserve_architectures import _engine_tokens, _reference
from tests.unit.rayserve.tiny_archs import build_tiny

# one preset per served architecture, on an instance type its Kaito example names; the proof case
# is the catalog's (ministral ships FP8: its FP8 case)
PRESETS = {
    "phi-4-mini-instruct": "Standard_NC24ads_A100_v4",
    "llama-3.1-8b-instruct": "Standard_NC24ads_A100_v4",
    "mistral-7b-instruct": "Standard_NC24ads_A100_v4",
    "qwen2.5-coder-7b-instruct": "Standard_NC24ads_A100_v4",
    "ibm-granite/granite-4.1-8b": "Standard_NC24ads_A100_v4",
    "falcon-7b-instruct": "Standard_NC24ads_A100_v4",
    "gemma-3-4b-instruct": "Standard_NV36ads_A10_v5",
    "ministral-3-8b-instruct": "Standard_NC24ads_A100_v4",
}
COMMIT = "0" * 40


def _proof_case(preset_name: str) -> str:
    catalog = default_catalog()
    preset = catalog.preset(preset_name)
    case = catalog.architecture(preset.architecture).proof.split("[")[1].rstrip("]")
    quant = catalog.quantizations.get(preset.quantization or "")
    return quant.proof.split("[")[1].rstrip("]") if quant else case


def _stand_in(cache: Path, case: str, repo: str, commit: str) -> None:
    """The tiny checkpoint laid out as the hub cache keeps a downloaded repo at ``commit``."""
    root = cache / f"models--{repo.replace('/', '--')}"
    build_tiny(case, root / "snapshots" / commit)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)


@pytest.mark.parametrize("preset_name", sorted(PRESETS))
def test_a_workspace_serves_its_preset_from_a_stand_in_under_the_models_id(
    preset_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    ws = workspace(preset=preset_name, instance_type=PRESETS[preset_name])
    assert validate_workspace(ws).allowed
    args = yaml.safe_load(build_serve_config(ws, plan_for(ws)))["applications"][0]["args"]
    spec = ModelSpec.model_validate({**args["model"], "dtype": "float32"})  # CPU: exact arithmetic
    preset = default_catalog().preset(preset_name)
    assert spec.path == preset.hf_model_id and spec.name == preset.name
    assert spec.revision == preset.revision  # the pinned commit, which the loaders ask the cache for
    _stand_in(tmp_path, _proof_case(preset_name), spec.path, spec.revision or COMMIT)
    expected = _reference(spec)
    assert _engine_tokens(LocalPipeline.load(spec, stages=1, gpus=0)) == expected
