"""Kaito v0.12's own 30 inference examples, applied unchanged through our validation.

Why: a Kaito user's manifests are the compatibility target. Each one must either be accepted
or be refused with a message that says what to change, never an "unknown field" error: every
field an example sets is in our generated CRD schema (the API server would otherwise reject or
prune it before the webhook sees it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from controller.api.validation import validate_workspace_object

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "tests/data/kaito_v0.12_examples"
CRD = ROOT / "config/crd/kaito.sh_workspaces.yaml"

# refused examples -> a phrase of the message saying what to change (everything else is accepted)
REFUSED = {
    "kaito_workspace_mistral_large_3_675b_instruct.yaml": "MistralLarge3ForCausalLM model",
}


def _workspace(path: Path) -> dict:
    (ws,) = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "Workspace"]
    ws["metadata"].setdefault("namespace", "default")
    return ws


def _schema() -> dict:
    crd = yaml.safe_load(CRD.read_text())
    (v1beta1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    return v1beta1["schema"]["openAPIV3Schema"]


def _unknown_fields(obj, schema: dict, path: str = "") -> list[str]:
    """Paths in ``obj`` the structural schema does not declare (what the API server rejects)."""
    if schema.get("x-kubernetes-preserve-unknown-fields") or not isinstance(obj, dict | list):
        return []
    if isinstance(obj, list):
        items = schema.get("items", {})
        return [p for i, item in enumerate(obj) for p in _unknown_fields(item, items, f"{path}[{i}]")]
    props, extra = schema.get("properties", {}), schema.get("additionalProperties")
    out = []
    for key, value in obj.items():
        sub = props.get(key) or (extra if isinstance(extra, dict) else None)
        if sub is None:
            out.append(f"{path}.{key}".lstrip("."))
        else:
            out += _unknown_fields(value, sub, f"{path}.{key}")
    return out


FILES = sorted(EXAMPLES.glob("kaito_workspace_*.yaml"))


def test_all_thirty_examples_are_here():
    assert len(FILES) == 30 and set(REFUSED) <= {f.name for f in FILES}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem.removeprefix("kaito_workspace_"))
def test_example_is_accepted_or_told_what_to_change(path: Path):
    ws = _workspace(path)
    assert _unknown_fields({k: v for k, v in ws.items() if k != "metadata"}, _schema()) == []
    result = validate_workspace_object(ws)
    if path.name in REFUSED:
        assert not result.allowed and REFUSED[path.name] in result.message
    else:
        assert result.allowed, result.message


def test_the_schema_walk_finds_an_unknown_field():
    obj = {"resource": {"partition": {"mode": "mig"}, "bogus": 1}}
    assert _unknown_fields(obj, _schema()) == ["resource.bogus"]


def test_at_least_the_accepted_share():
    accepted = len(FILES) - len(REFUSED)
    assert accepted == 29  # see docs/models.md for what the others need
