"""The builder's serveConfigV2, deployed the way KubeRay (and our local stand-in) does it:
``PUT /api/serve/applications/`` on the Ray dashboard. Two pipeline workers per replica, so
this also runs placement-group bundles and stage actors under Serve."""

from __future__ import annotations

import httpx
import pytest
import yaml

from rayserve.builder import AutoscalingSpec, ServeConfigInput, build_serve_config
from rayserve.spec import EngineSpec, ModelSpec
from tests.serve.conftest import wait_for

pytestmark = pytest.mark.serve


def _groups(bundles: list[dict]) -> int:
    """Live placement groups with exactly these bundles."""
    from ray.util.placement_group import placement_group_table

    return sum(
        1
        for g in placement_group_table().values()
        if g["state"] == "CREATED" and list(g["bundles"].values()) == bundles
    )


def test_rest_deploy_of_built_config_serves(ray_serve, tiny_model):
    port = int(ray_serve.http_url.rsplit(":", 1)[1])
    text = build_serve_config(
        ServeConfigInput(
            model=ModelSpec(name="tiny-phi-3", path=str(tiny_model), max_context=256),
            workers_per_replica=2,
            gpus_per_worker=0,
            cpus_per_worker=0.1,
            replica_cpus=0.1,
            autoscaling=AutoscalingSpec(min_replicas=1, max_replicas=1, target_ongoing_requests=2),
            engine=EngineSpec(max_batch_size=4, max_waiting=4),
            serve_port=port,
            app_name="built",
            route_prefix="/built",
        )
    )
    api = f"{ray_serve.dashboard_url}/api/serve/applications/"
    r = httpx.put(api, json=yaml.safe_load(text), timeout=60)
    assert r.status_code == 200, r.text
    try:

        def running():
            apps = httpx.get(api, timeout=10).json()["applications"]
            app = apps.get("built", {})
            if app.get("status") == "DEPLOY_FAILED":
                raise AssertionError(app.get("message"))
            return app.get("status") == "RUNNING"

        wait_for(running, timeout=180, interval=1, what="app 'built' RUNNING")
        # one replica = one Serve-made group (replica + stage 0 in bundle 0, stage 1 in bundle 1);
        # the stages must use it rather than make their own
        assert _groups([{"CPU": 0.2}, {"CPU": 0.1}]) == 1
        assert _groups([{"CPU": 0.1}, {"CPU": 0.1}]) == 0
        body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 5, "temperature": 0}
        out = httpx.post(f"{ray_serve.http_url}/built/v1/chat/completions", json=body, timeout=60)
        assert out.status_code == 200, out.text
        assert out.json()["usage"]["completion_tokens"] >= 1
    finally:
        httpx.delete(api, timeout=60)
        wait_for(lambda: not httpx.get(api, timeout=10).json()["applications"], timeout=60, what="apps gone")
