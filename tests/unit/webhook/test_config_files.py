"""The committed samples pass validation (the chart's RBAC and webhook: tests/integration/chart)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from controller.api import Workspace
from controller.api.validation import validate_workspace_object
from presets.estimator import estimate_for

CONFIG = Path(__file__).resolve().parents[3] / "config"
SAMPLES = sorted((CONFIG / "samples").glob("workspace_*.yaml"))


def test_the_four_samples_exist():
    assert {p.name for p in SAMPLES} >= {
        "workspace_phi_3.yaml",
        "workspace_phi_3_with_adapters.yaml",
        "workspace_tuning_qlora_phi_3.yaml",
        "workspace_tiny_phi_3.yaml",
    }


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_sample_is_valid(path):
    obj = yaml.safe_load(path.read_text())
    result = validate_workspace_object(obj)
    assert result.allowed, result.message
    assert not result.warnings
    ws = Workspace.from_k8s(obj)
    method = ws.tuning.method if ws.tuning else None
    est = estimate_for(ws.preset_name, ws.resource.instance_type, tuning_method=method)
    assert est.node_count == 1, est.message
