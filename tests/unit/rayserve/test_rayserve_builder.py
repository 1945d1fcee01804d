"""rayserve.builder: the serveConfigV2 the controller puts into a RayService."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from rayserve.builder import (
    SHARDED_HEALTH_CHECK_PERIOD_S,
    AutoscalingSpec,
    ServeConfigInput,
    build_serve_config,
    serve_config,
)
from rayserve.spec import AdapterSpec, ModelSpec, ServeArgs

PHI = ModelSpec(name="phi-3-mini-4k-instruct", path="/models/phi-3", max_context=4096)


def test_single_worker_replica_asks_for_its_gpu():
    text = build_serve_config(ServeConfigInput(model=PHI))
    cfg = yaml.safe_load(text)
    assert isinstance(text, str) and cfg["http_options"] == {"host": "0.0.0.0", "port": 8000}
    (app,) = cfg["applications"]
    assert app["import_path"] == "rayserve.app:build_app" and app["route_prefix"] == "/"
    (dep,) = app["deployments"]
    assert dep["name"] == "LLMServer"
    assert dep["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 1}
    assert "placement_group_bundles" not in dep
    assert set(dep["autoscaling_config"]) == {
        "min_replicas",
        "max_replicas",
        "target_ongoing_requests",
        "upscale_delay_s",
        "downscale_delay_s",
        "look_back_period_s",
    }
    assert dep["max_ongoing_requests"] >= ServeArgs.model_validate(app["args"]).engine.max_batch_size
    assert ServeArgs.model_validate(app["args"]).model == PHI
    assert dep["health_check_period_s"] == 10  # nothing but the replica itself can die


def test_pipeline_replica_gets_one_bundle_per_worker():
    spec = ServeConfigInput(
        model=PHI,
        workers_per_replica=3,
        gpus_per_worker=1,
        cpus_per_worker=2,
        replica_cpus=1,
        placement_strategy="STRICT_PACK",
        autoscaling=AutoscalingSpec(
            min_replicas=1, max_replicas=4, initial_replicas=2, target_ongoing_requests=4
        ),
        adapters=[AdapterSpec(name="qa", path="/adapters/qa", strength=0.5)],
        serve_port=9000,
        app_name="ws1",
        route_prefix="/ws1",
    )
    cfg = serve_config(spec)
    dep = cfg["applications"][0]["deployments"][0]
    assert dep["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 0}
    assert dep["placement_group_bundles"] == [
        {"CPU": 3, "GPU": 1},
        {"CPU": 2, "GPU": 1},
        {"CPU": 2, "GPU": 1},
    ]
    assert dep["placement_group_strategy"] == "STRICT_PACK"
    # a dead stage actor is only noticed by the health check: look often
    assert dep["health_check_period_s"] == SHARDED_HEALTH_CHECK_PERIOD_S < 10
    assert dep["autoscaling_config"]["initial_replicas"] == 2
    args = ServeArgs.model_validate(cfg["applications"][0]["args"])
    assert args.parallel.workers == 3 and args.adapters[0].strength == 0.5
    assert cfg["http_options"]["port"] == 9000


def test_cpu_only_bundles_have_no_gpu_key_and_output_is_deterministic():
    spec = ServeConfigInput(model=PHI, workers_per_replica=2, gpus_per_worker=0, cpus_per_worker=0.5)
    dep = serve_config(spec)["applications"][0]["deployments"][0]
    assert dep["placement_group_bundles"] == [{"CPU": 1.5}, {"CPU": 0.5}]
    assert build_serve_config(spec) == build_serve_config(spec.model_copy(deep=True))


@pytest.mark.parametrize(
    "bad",
    [
        {"autoscaling": {"min_replicas": 3, "max_replicas": 2}},
        {"autoscaling": {"min_replicas": 1, "max_replicas": 2, "initial_replicas": 5}},
        {"autoscaling": {"target_ongoing_requests": 10_000}},
        {"adapters": [{"name": "phi-3-mini-4k-instruct", "path": "/a"}]},
        {"adapters": [{"name": "a", "path": "/a"}, {"name": "a", "path": "/b"}]},
        {"workers_per_replica": 0},
        {"route_prefix": "no-slash"},
    ],
)
def test_rejects_incoherent_input(bad):
    with pytest.raises(ValidationError):
        ServeConfigInput.model_validate({"model": PHI.model_dump(), **bad})


def test_cli_prints_the_same_config(capsys):
    from rayserve.builder import main

    main(
        [
            "--name",
            "tiny",
            "--path",
            "/m",
            "--workers",
            "2",
            "--gpus-per-worker",
            "0",
            "--adapter",
            "qa=/a:0.5",
        ]
    )
    cfg = yaml.safe_load(capsys.readouterr().out)
    app = cfg["applications"][0]
    assert app["args"]["adapters"] == [{"name": "qa", "path": "/a", "strength": 0.5}]
    assert app["deployments"][0]["placement_group_bundles"] == [{"CPU": 2.0}, {"CPU": 1.0}]


def test_tensor_parallel_replica_gets_a_bundle_per_stage_and_keeps_old_configs():
    spec = ServeConfigInput(model=PHI, workers_per_replica=1, gpus_per_worker=2, tensor_parallel=2)
    dep = serve_config(spec)["applications"][0]["deployments"][0]
    assert dep["ray_actor_options"]["num_gpus"] == 0
    assert dep["placement_group_bundles"] == [{"CPU": 2, "GPU": 2}]  # stage 0's two ranks
    assert dep["health_check_period_s"] == SHARDED_HEALTH_CHECK_PERIOD_S
    args = ServeArgs.model_validate(serve_config(spec)["applications"][0]["args"])
    assert (args.parallel.workers, args.parallel.tensor_parallel, args.parallel.gpus_per_worker) == (1, 2, 2)
    # without tensor parallelism the field is left out: existing serve configs keep their bytes
    plain = serve_config(ServeConfigInput(model=PHI, workers_per_replica=2))["applications"][0]["args"]
    assert "tensor_parallel" not in plain["parallel"]
    with pytest.raises(ValidationError, match="whole number of GPUs"):
        ServeConfigInput(model=PHI, gpus_per_worker=1, tensor_parallel=2)
