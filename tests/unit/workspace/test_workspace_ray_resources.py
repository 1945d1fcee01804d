"""A worker node offers Ray the CPUs the serve config's placement bundles ask for.

The case that broke: Phi-3-medium on the seed's NC6s_v3 is two pipeline stages on two nodes; bundle
0 (coordinator + stage 0) asked for 2 CPUs while each worker Pod requested 1, so KubeRay started
each worker with ``--num-cpus=1`` and Serve never placed the replica (found by
tests/e2e/test_multinode_local_loop.py)."""

from __future__ import annotations

import math

import pytest
import yaml
from ws_unit_helpers import workspace

from controller.workspace.inference import build_rayservice
from controller.workspace.plan import plan_for
from controller.workspace.serveconfig import build_serve_config


@pytest.mark.parametrize(("preset", "instance_type"), [
    ("phi-3-medium-4k-instruct", "Standard_NC6s_v3"),  # 2 nodes x 1 GPU: stages across nodes
    ("phi-3-mini-4k-instruct", "Standard_NC6s_v3"),  # 1 node: the replica alone
    ("llama-3.3-70b-instruct", "Standard_NC96ads_A100_v4"),  # 1 node x 4 GPUs, tensor parallel
    ("tiny-phi-3", "Standard_Fake_GPU"),
])
def test_every_bundle_fits_on_one_worker_node(preset: str, instance_type: str) -> None:
    ws = workspace(preset=preset, instance_type=instance_type)
    plan = plan_for(ws)
    [app] = yaml.safe_load(build_serve_config(ws, plan))["applications"]
    [dep] = app["deployments"]
    cluster = build_rayservice(ws, plan, "x", "img")["spec"]["rayClusterConfig"]
    [group] = cluster["workerGroupSpecs"]
    [container] = group["template"]["spec"]["containers"]
    # what KubeRay passes as --num-cpus: the CPU request rounded up (no limit is set)
    assert "cpu" not in container["resources"].get("limits", {})
    node_cpus = math.ceil(float(container["resources"]["requests"]["cpu"]))
    node_gpus = int(group["rayStartParams"]["num-gpus"])
    asks = dep.get("placement_group_bundles") or [{
        "CPU": dep["ray_actor_options"]["num_cpus"], "GPU": dep["ray_actor_options"]["num_gpus"]}]
    for bundle in asks:
        assert bundle.get("CPU", 0) <= node_cpus and bundle.get("GPU", 0) <= node_gpus, (bundle, node_cpus)
    if plan.node_count > 1 and plan.pipeline_parallel > 1:
        assert len(asks) == plan.pipeline_parallel  # the case this guards: stages spread over nodes
