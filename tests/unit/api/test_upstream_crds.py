"""The CRDs of kinds other projects define are theirs: fetched (KubeRay, Karpenter) or pinned (Machine)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from hack import upstream_crds
from hack.gen_crds import CHART_CRD_DIR, CRD_DIR

# sha256 of kaito-project/kaito v0.3.2:charts/kaito/workspace/crds/karpenter.sh_machines.yaml
KAITO_V032_MACHINES_SHA256 = "9cb3d2b071127974e8ba470fa130ef6ac350e188e16d9c1dd15d3bcaea54230c"


def _body(path: Path) -> bytes:
    """The file without our provenance header (leading comment lines)."""
    lines = path.read_bytes().splitlines(keepends=True)
    while lines and lines[0].startswith(b"#"):
        lines.pop(0)
    return b"".join(lines)


MACHINE_CRDS = [CRD_DIR / "karpenter.sh_machines.yaml", CHART_CRD_DIR / "karpenter.sh_machines.yaml"]


@pytest.mark.parametrize("path", MACHINE_CRDS)
def test_machine_crd_is_kaitos_v0_3_2_unchanged(path):
    assert hashlib.sha256(_body(path)).hexdigest() == KAITO_V032_MACHINES_SHA256
    crd = yaml.safe_load(path.read_text())
    assert crd["spec"]["scope"] == "Cluster" and [v["name"] for v in crd["spec"]["versions"]] == ["v1alpha5"]


def test_no_generated_copies_of_upstream_crds_are_committed():
    committed = sorted(p.name for p in CRD_DIR.glob("*.yaml"))
    assert committed == ["kaito.sh_workspaces.yaml", "karpenter.sh_machines.yaml"]


def test_kuberay_crds_come_from_the_operator_version_we_build():
    go_mod = (upstream_crds.REPO / "hack" / "kuberay" / "go.mod").read_text()
    version = upstream_crds.kuberay_version()
    assert f"{upstream_crds.KUBERAY_MODULE} {version}" in go_mod
    ray = next(s for s in upstream_crds.sources() if s.module == upstream_crds.KUBERAY_MODULE)
    assert ray.version == version and "ray.io_rayservices.yaml" in ray.files


def test_a_cached_fetch_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("KAITO_CRD_DIR", str(tmp_path))
    source = upstream_crds.Source("example.com/m", "v1.0.0", "crds", ("a.yaml",))
    source.dest.mkdir(parents=True)
    (source.dest / "a.yaml").write_text("kind: CustomResourceDefinition\n")

    def no_download(*_a, **_k):
        raise AssertionError("downloaded although cached")

    monkeypatch.setattr(upstream_crds, "_module_dir", no_download)
    assert upstream_crds.fetch(source) == [source.dest / "a.yaml"]


def test_a_fetch_copies_all_files_or_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("KAITO_CRD_DIR", str(tmp_path / "cache"))
    module = tmp_path / "module"
    (module / "crds").mkdir(parents=True)
    (module / "crds" / "a.yaml").write_text("a\n")
    monkeypatch.setattr(upstream_crds, "_module_dir", lambda *_: module)
    ok = upstream_crds.Source("example.com/m", "v1.0.0", "crds", ("a.yaml",))
    assert [p.read_text() for p in upstream_crds.fetch(ok)] == ["a\n"]
    bad = upstream_crds.Source("example.com/m", "v2.0.0", "crds", ("a.yaml", "b.yaml"))
    with pytest.raises(upstream_crds.FetchError, match=r"no crds/b\.yaml"):
        upstream_crds.fetch(bad)
    assert not bad.dest.exists()


def test_without_go_the_fetch_says_so(monkeypatch):
    monkeypatch.setattr(upstream_crds.shutil, "which", lambda _: None)
    with pytest.raises(upstream_crds.FetchError, match="'go' is not on PATH"):
        upstream_crds._module_dir("example.com/m", "v1.0.0")
