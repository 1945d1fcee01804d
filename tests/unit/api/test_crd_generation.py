"""config/crd/kaito.sh_workspaces.yaml is generated from controller/api: no drift, and structural."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from hack.gen_crds import CHART_CRD_DIR, CHART_CRDS, CRD_DIR, SchemaError, all_crds, main, render, structural

CRDS = all_crds()


@pytest.mark.parametrize("name", sorted(CRDS))
def test_committed_crd_matches_the_models(name):
    path = CRD_DIR / name
    assert path.exists(), f"{path} missing: run python -m hack.gen_crds"
    assert path.read_text() == render(CRDS[name]), (
        f"{path} drifted from controller/api: run python -m hack.gen_crds"
    )


@pytest.mark.parametrize("name", CHART_CRDS)
def test_the_chart_installs_the_same_crds(name):
    assert (CHART_CRD_DIR / name).read_text() == render(CRDS[name]), "run python -m hack.gen_crds"


def test_check_mode_reports_drift(tmp_path, capsys):
    out = ["--out", str(tmp_path / "crd"), "--chart-out", str(tmp_path / "chart")]
    assert main(out) == 0
    assert main(["--check", *out]) == 0
    (tmp_path / "chart" / "kaito.sh_workspaces.yaml").write_text("edited by hand\n")
    assert main(["--check", *out]) == 1
    assert "chart/kaito.sh_workspaces.yaml" in capsys.readouterr().out


def _walk(node: Any, path: str = "$"):
    yield path, node
    if isinstance(node, dict):
        for key, sub in node.get("properties", {}).items():
            yield from _walk(sub, f"{path}.{key}")
        if isinstance(node.get("additionalProperties"), dict):
            yield from _walk(node["additionalProperties"], f"{path}[*]")
        if "items" in node:
            yield from _walk(node["items"], f"{path}[]")


@pytest.mark.parametrize("name", sorted(CRDS))
def test_schemas_are_structural(name):
    for version in CRDS[name]["spec"]["versions"]:
        for path, node in _walk(version["schema"]["openAPIV3Schema"]):
            assert "$ref" not in node and "title" not in node, path
            assert node.get("type") != "null", path
            assert "type" in node or node.get("x-kubernetes-int-or-string"), path
            if "anyOf" in node:
                assert node.get("x-kubernetes-int-or-string"), path
            assert not ("properties" in node and "additionalProperties" in node), path
            free_form = "properties" not in node and "additionalProperties" not in node
            if node.get("type") == "object" and free_form and path != "$.metadata":  # the server owns it
                assert node.get("x-kubernetes-preserve-unknown-fields"), f"{path} would be pruned empty"


def test_workspace_crd_shape():
    spec = CRDS["kaito.sh_workspaces.yaml"]["spec"]
    assert spec["names"]["shortNames"] == ["wk", "wks"]
    assert [(v["name"], v["served"], v["storage"]) for v in spec["versions"]] == [
        ("v1alpha1", True, False),
        ("v1beta1", True, True),
    ]
    v1 = spec["versions"][1]
    assert v1["subresources"] == {"status": {}}

    def columns(version: dict) -> list[str]:
        return [c["name"].upper() for c in version["additionalPrinterColumns"] if not c.get("priority")]

    # v1alpha1: the seed's columns; v1beta1: Kaito v0.12's, over the same stored object
    assert columns(spec["versions"][0]) == ["INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY",
                                            "AGE"]
    assert columns(v1) == ["INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "JOBSTARTED", "WORKSPACESUCCEEDED",
                           "WORKSPACEREADY", "TARGETNODECOUNT", "STATE", "AGE"]
    root = v1["schema"]["openAPIV3Schema"]
    assert spec["versions"][0]["schema"] == v1["schema"]
    rules = [r["rule"] for r in root["x-kubernetes-validations"]]
    assert "has(self.inference) != has(self.tuning)" in rules
    resource = root["properties"]["resource"]
    assert resource["properties"]["instanceType"]["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"
    assert resource["properties"]["count"]["default"] == 1
    template = root["properties"]["inference"]["properties"]["template"]
    assert template == {
        "description": "A core/v1 PodTemplateSpec, instead of a preset.",
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    conditions = root["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"


def test_unions_without_a_structural_form_are_refused():
    with pytest.raises(SchemaError, match="unions"):
        structural({"anyOf": [{"type": "string"}, {"type": "boolean"}]}, {}, "x")


def test_every_list_string_and_map_of_the_workspace_spec_is_bounded() -> None:
    """An unbounded list or string lets one object reach the API server's size limit, costs the
    CEL rules over it without bound, and makes every later UPDATE review (object and old object)
    too big for the webhook. Free-form fields (a VolumeSource, a PodTemplateSpec) are checked by
    their own rules, not by the schema."""
    crd = yaml.safe_load((CRD_DIR / "kaito.sh_workspaces.yaml").read_text())
    unbounded: list[str] = []

    def walk(node: dict, path: str) -> None:
        if node.get("x-kubernetes-preserve-unknown-fields"):
            return
        kind = node.get("type")
        if kind == "array":
            if "maxItems" not in node:
                unbounded.append(f"{path}: no maxItems")
            walk(node["items"], f"{path}[]")
        elif kind == "string":
            if "maxLength" not in node and "enum" not in node:
                unbounded.append(f"{path}: no maxLength")
        elif "additionalProperties" in node:
            if "maxProperties" not in node:
                unbounded.append(f"{path}: no maxProperties")
            walk(node["additionalProperties"], f"{path}{{}}")
        for key, sub in (node.get("properties") or {}).items():
            walk(sub, f"{path}.{key}")

    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]["properties"]
        for top in ("resource", "inference", "tuning"):
            walk(schema[top], f"{version['name']}:{top}")
    assert unbounded == []
