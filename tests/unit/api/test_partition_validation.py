"""Kaito v0.12's ``resource.partition`` at admission: a partitioned workspace names no instance
type (it runs on existing nodes matching its labels), mode accelerator needs ``count`` and mode
mig a known profile whose one slice holds the model; each refusal says what to change."""

from __future__ import annotations

from controller.api.validation import validate_workspace_object


def ws(partition: dict, preset: str = "llama-3.1-8b-instruct", **resource) -> dict:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "ws", "namespace": "default"},
        "resource": {"labelSelector": {"matchLabels": {"apps": "part"}}, "partition": partition, **resource},
        "inference": {"preset": {"name": preset, "presetOptions": {"modelAccessSecret": "hf"}}},
    }


def test_an_accelerator_partition_of_existing_nodes_is_accepted_without_an_instance_type():
    result = validate_workspace_object(ws({"mode": "accelerator", "count": 2}))
    assert result.allowed, result.message


def test_a_partition_with_an_instance_type_is_refused_with_what_to_change():
    result = validate_workspace_object(ws({"mode": "accelerator", "count": 1},
                                          instanceType="Standard_NC24ads_A100_v4"))
    assert not result.allowed
    assert result.message.startswith("resource.instanceType: must be empty with resource.partition")
    assert "remove resource.instanceType" in result.message


def test_accelerator_mode_needs_a_count_and_no_profile():
    msg = validate_workspace_object(ws({"mode": "accelerator", "profile": "1g.10gb"})).message
    assert "resource.partition.profile: is not valid for mode accelerator" in msg
    assert "resource.partition.count: is required for mode accelerator" in msg


def test_mig_mode_needs_a_known_profile_and_no_count():
    msg = validate_workspace_object(ws({"mode": "mig", "profile": "1g.10gb", "count": 2})).message
    assert "resource.partition.count: is only valid for mode accelerator" in msg
    msg = validate_workspace_object(ws({"mode": "mig", "profile": "9g.1tb"})).message
    assert "unknown MIG profile '9g.1tb': must be one of 1g.10gb" in msg
    assert "resource.partition.profile: is required" in validate_workspace_object(ws({"mode": "mig"})).message


def test_a_model_that_does_not_fit_one_mig_slice_is_refused_naming_a_way_out():
    small = validate_workspace_object(ws({"mode": "mig", "profile": "1g.10gb"}))
    assert not small.allowed
    assert small.message.startswith("resource.partition: llama-3.1-8b-instruct needs ")
    assert "9 GiB usable per GPU" in small.message
    assert "a MIG workload runs on exactly one slice; pick a larger profile than 1g.10gb" in small.message
    assert validate_workspace_object(ws({"mode": "mig", "profile": "3g.40gb"})).allowed


def test_the_bypass_annotation_turns_a_slice_misfit_into_a_warning():
    obj = ws({"mode": "mig", "profile": "1g.10gb"})
    obj["metadata"]["annotations"] = {"kaito.sh/bypass-resource-checks": "True"}
    result = validate_workspace_object(obj)
    assert result.allowed and "exactly one slice" in result.warnings[0]


def test_a_partition_needs_a_label_selector_and_an_inference_workload():
    obj = ws({"mode": "accelerator", "count": 1})
    obj["resource"]["labelSelector"] = {}
    msg = validate_workspace_object(obj).message
    assert "resource.labelSelector: must select the nodes to partition" in msg
    tuning = ws({"mode": "accelerator", "count": 1}, preset="phi-3-mini-4k-instruct")
    tuning["tuning"] = {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "qlora",
                        "input": {"urls": ["https://example.com/d.parquet"]},
                        "output": {"image": "r/x:1", "imagePushSecret": "s"}}
    del tuning["inference"]
    assert "not supported for tuning workloads" in validate_workspace_object(tuning).message


def test_a_partition_is_immutable():
    old = ws({"mode": "accelerator", "count": 1})
    new = ws({"mode": "accelerator", "count": 2})
    assert "resource.partition: is immutable" in validate_workspace_object(new, old).message
