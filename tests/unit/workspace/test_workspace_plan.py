"""The Plan built from the preset estimator, and validation of what the reconciler needs."""

from __future__ import annotations

import pytest
from ws_unit_helpers import workspace

from controller.workspace.plan import Plan, PlanError, plan_for
from controller.workspace.validation import validate


def test_plan_from_estimator_explains_itself() -> None:
    plan = plan_for(workspace(instance_type="Standard_NC6s_v3"))
    assert plan.node_count >= 1 and plan.gpus_per_node == 1 and plan.disk_gib
    assert plan.message.startswith("Estimate:") and "Standard_NC6s_v3" in plan.message


def test_plan_errors_are_messages() -> None:
    with pytest.raises(PlanError, match="unknown preset"):
        plan_for(workspace(preset="phi-9000"))
    with pytest.raises(PlanError, match="unknown instance type"):
        plan_for(workspace(instance_type="Standard_Nope"))


def test_plan_keeps_recorded_node_count() -> None:
    plan = Plan("p", "sku", node_count=1, gpus_per_node=4, tensor_parallel=2, pipeline_parallel=1)
    assert plan.max_replicas == 2
    kept = plan.with_node_count(3)
    assert kept.node_count == 3 and kept.max_replicas == 6 and "set earlier" in kept.message


def test_validate_reuses_the_webhook_rules() -> None:
    assert validate(workspace()) is None
    ws = workspace()
    ws.inference = None
    assert "neither" in (validate(ws) or "")
    assert "phi-9" in (validate(workspace(preset="phi-9")) or "")
    ws = workspace()
    ws.inference.preset = None
    ws.inference.template = {"spec": {"containers": []}}
    assert "template" in (validate(ws) or "")
