"""The Plan built from the preset estimator, and validation of what the reconciler needs."""

from __future__ import annotations

import pytest
from ws_unit_helpers import workspace

from controller.api.validation import reconcile_problem
from controller.workspace.plan import Plan, PlanError, plan_for


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


def test_reconcile_problem_reuses_the_webhook_rules() -> None:
    assert reconcile_problem(workspace()) is None
    ws = workspace()
    ws.inference = None
    assert "neither" in (reconcile_problem(ws) or "")
    assert "phi-9" in (reconcile_problem(workspace(preset="phi-9")) or "")
    ws = workspace()
    ws.inference.preset = None
    ws.inference.template = {"spec": {"containers": []}}
    assert "template" in (reconcile_problem(ws) or "")


def test_a_misfit_is_judged_once_by_the_planner_as_the_webhook_would() -> None:
    # the reconciler's validation leaves the estimator to plan_for (one estimate per pass) ...
    ws = workspace(preset="falcon-7b-instruct", instance_type="Standard_Fake_GPU")
    assert reconcile_problem(ws) is None
    # ... which reports a misfit as the webhook does: a spec problem on resource.instanceType
    with pytest.raises(PlanError, match=r"^resource\.instanceType: falcon-7b-instruct needs 14 GiB") as exc:
        plan_for(ws)
    assert exc.value.invalid
    # unless the bypass annotation lets it through: then the estimate itself failed
    ws.metadata.annotations = {"kaito.sh/bypass-resource-checks": "True"}
    with pytest.raises(PlanError, match=r"^falcon-7b-instruct needs 14 GiB") as exc:
        plan_for(ws)
    assert not exc.value.invalid


def test_plan_resolves_the_preset_once_for_every_builder() -> None:
    # the serve config and the tuning Job read these from the Plan, never from the catalog
    plan = plan_for(workspace())
    assert plan.model == plan.model_source == "microsoft/Phi-3-mini-4k-instruct"
    assert plan.dtype == "float16" and not plan.fake_gpu and plan.max_context
    fake = plan_for(workspace(preset="tiny-phi-3", instance_type="Standard_Fake_GPU"))
    assert fake.fake_gpu and fake.dtype == "float32"
    # a Plan made by hand (tests, experiments) loads the preset by its name
    assert Plan("some/hub-id", "sku", node_count=1, gpus_per_node=1).model == "some/hub-id"


def test_the_plan_knows_whether_the_sku_has_local_nvme() -> None:
    from ws_unit_helpers import workspace

    from controller.workspace.plan import plan_for

    assert plan_for(workspace(instance_type="Standard_NC24ads_A100_v4")).local_nvme
    assert not plan_for(workspace(instance_type="Standard_NC6s_v3")).local_nvme
