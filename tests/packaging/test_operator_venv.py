"""The operator installs and runs on its base dependencies alone: no torch, no ray, no transformers.

A fresh venv gets ``pip install .`` (no extras), as controller/Dockerfile does. Its third-party
packages are cached under ~/.cache/kaito-py keyed on pyproject.toml (the first run downloads
~60 MB); the project itself is reinstalled each run, so what is imported is this tree's code.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("KAITO_CACHE", Path.home() / ".cache" / "kaito-py"))

# what the controller and provisioner processes import at start (their mains import the rest)
OPERATOR_MODULES = [
    "controller.main", "provisioner.main", "controller.webhook.server", "controller.workspace.reconciler",
    "controller.workspace.tuning", "provisioner.cloud.azure", "provisioner.cloud.fake",
]
DATA_PLANE = ["torch", "ray", "transformers", "peft", "accelerate", "pyarrow"]


def _run(*cmd: str | Path, cwd: Path | None = None) -> str:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, timeout=900)
    where = " ".join(map(str, cmd))
    assert res.returncode == 0, f"{where} failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    return res.stdout


@pytest.fixture(scope="module")
def operator_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:12]
    venv = CACHE / f"operator-venv-{key}"
    py = venv / "bin" / "python"
    if not (venv / ".ready").exists():
        _run(sys.executable, "-m", "venv", "--clear", venv)
        _run(py, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
        _run(py, "-m", "pip", "install", "--quiet", _source_copy(tmp_path_factory.mktemp("deps-src")))
        (venv / ".ready").write_text("ok\n")
    # always this tree's code (deps are cached; --no-deps reinstalls only the project, a few
    # seconds), built from a copy so setuptools' build/ never lands in the checkout
    src = _source_copy(tmp_path_factory.mktemp("operator-src"))
    _run(py, "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", src)
    return venv


def _source_copy(dest: Path) -> Path:
    """What controller/Dockerfile copies: pyproject.toml and the Python packages."""
    shutil.copy2(REPO / "pyproject.toml", dest)
    for pkg in ("controller", "provisioner", "rayserve", "presets", "hack"):
        shutil.copytree(REPO / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_no_data_plane_package_is_installed(operator_venv: Path) -> None:
    code = ("import importlib.util, json\n"
            f"print(json.dumps([m for m in {DATA_PLANE!r} if importlib.util.find_spec(m)]))")
    out = _run(operator_venv / "bin" / "python", "-c", code, cwd=operator_venv)
    assert out.strip() == "[]", f"the operator venv has data-plane packages: {out}"


def test_entry_points_and_operator_modules_run(operator_venv: Path) -> None:
    # run from the venv dir, not the repo: the installed copy must be what is imported
    for script in ("kaito-controller", "kaito-provisioner"):
        assert "usage:" in _run(operator_venv / "bin" / script, "--help", cwd=operator_venv)
    code = (f"import importlib, sys\nfor m in {OPERATOR_MODULES!r}: importlib.import_module(m)\n"
            f"bad = sorted(m for m in {DATA_PLANE!r} if m in sys.modules)\n"
            "assert not bad, bad\nimport controller; print(controller.__file__)")
    where = _run(operator_venv / "bin" / "python", "-c", code, cwd=operator_venv).strip()
    assert "site-packages" in where, where


def test_the_tuning_config_check_needs_no_torch(operator_venv: Path) -> None:
    samples = REPO / "config" / "samples"
    code = f"""
import sys, yaml
from controller.api import Workspace
from controller.workspace.tuning import check_training_config
ws = Workspace.from_k8s(yaml.safe_load(open({str(samples / "workspace_tuning_qlora_phi_3.yaml")!r})))
cm = yaml.safe_load(open({str(samples / "tuning_config_qlora_phi_3.yaml")!r}))
check = check_training_config(ws, cm)
assert check.problem is None, check.problem
print(sorted(m for m in {DATA_PLANE!r} if m in sys.modules))
"""
    assert _run(operator_venv / "bin" / "python", "-c", code, cwd=operator_venv).strip() == "[]"
