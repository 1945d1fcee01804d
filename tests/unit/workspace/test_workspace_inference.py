"""RayService / Service / Job shapes and how their statuses read."""

from __future__ import annotations

import pytest
from ws_unit_helpers import workspace

from controller.api.rayservice import RayService
from controller.workspace import names
from controller.workspace.inference import build_rayservice, build_service, rayservice_state
from controller.workspace.plan import Plan
from controller.workspace.tuning import build_tuning_job, job_state

PLAN = Plan(
    preset="phi-3-mini-4k-instruct",
    instance_type="Standard_NC12s_v3",
    node_count=2,
    gpus_per_node=2,
    tensor_parallel=1,
    pipeline_parallel=1,
    disk_gib=50,
    message="Estimate: ...",
    model_source="microsoft/Phi-3-mini-4k-instruct",
)


def test_rayservice_is_pinned_owned_and_carries_the_serve_config() -> None:
    ws = workspace(adapters=[{"source": {"name": "fr", "image": "reg/fr:1"}, "strength": "0.5"}])
    rs = build_rayservice(ws, PLAN, "applications: []\n", "img:1")
    RayService.model_validate(rs)
    assert rs["metadata"]["ownerReferences"][0]["kind"] == "Workspace"
    assert rs["metadata"]["ownerReferences"][0]["uid"] == "uid-1234"
    assert rs["spec"]["serveConfigV2"] == "applications: []\n"
    cluster = rs["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    [group] = cluster["workerGroupSpecs"]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 2
    assert group["rayStartParams"]["num-gpus"] == "2"
    for template in (head["template"], group["template"]):
        spec = template["spec"]
        assert spec["nodeSelector"][names.LABEL_WORKSPACE] == "phi"
        assert spec["nodeSelector"][names.LABEL_WORKSPACE_NAMESPACE] == "team-a"
        assert spec["nodeSelector"]["apps"] == "phi-3"
        assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in spec[
            "tolerations"
        ]
        assert template["metadata"]["labels"][names.LABEL_WORKSPACE] == "phi"
    worker = group["template"]["spec"]
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert worker["containers"][0]["volumeMounts"] == [
        {"name": "adapter-0", "mountPath": "/mnt/adapter/fr"},
        {"name": "model-cache", "mountPath": "/mnt/model-cache"},
    ]
    assert worker["initContainers"][0]["image"] == "reg/fr:1"
    ports = {p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert ports["serve"] == 8000 and ports["dashboard"] == 8265


def test_service_port_80_to_serve_port() -> None:
    svc = build_service(workspace())
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 8000, "protocol": "TCP"}]
    assert svc["spec"]["selector"] == {names.LABEL_WORKSPACE: "phi"}
    assert svc["metadata"]["ownerReferences"][0]["name"] == "phi"
    assert svc["spec"]["type"] == "ClusterIP"
    ws = workspace()
    ws.metadata.annotations = {"kaito.sh/enablelb": "True"}
    assert build_service(ws, allow_load_balancer=True)["spec"]["type"] == "LoadBalancer"


def test_a_load_balancer_needs_the_operators_leave_and_honours_source_ranges() -> None:
    """The annotation alone made a public LoadBalancer; now the operator must allow it, and the
    Service admits only the workspace's (or the operator's) source ranges."""
    ws = workspace()
    ws.metadata.annotations = {"kaito.sh/enablelb": "True"}
    assert build_service(ws)["spec"]["type"] == "ClusterIP"
    spec = build_service(ws, allow_load_balancer=True, default_source_ranges=("10.0.0.0/8",))["spec"]
    assert spec["type"] == "LoadBalancer" and spec["loadBalancerSourceRanges"] == ["10.0.0.0/8"]
    ws.metadata.annotations["kaito.sh/loadbalancer-source-ranges"] = " 203.0.113.7/32, 198.51.100.0/24 "
    spec = build_service(ws, allow_load_balancer=True, default_source_ranges=("10.0.0.0/8",))["spec"]
    assert spec["loadBalancerSourceRanges"] == ["203.0.113.7/32", "198.51.100.0/24"]
    ws.metadata.annotations["kaito.sh/loadbalancer-source-ranges"] = "203.0.113.7/32, everyone"
    spec = build_service(ws, allow_load_balancer=True)["spec"]
    assert spec["type"] == "ClusterIP" and "loadBalancerSourceRanges" not in spec  # a typo never opens it


def test_an_api_key_secret_reaches_the_pods_env_and_the_serve_config() -> None:
    from controller.workspace.serveconfig import serve_input

    plain = build_rayservice(workspace(), PLAN, "x", "img")["spec"]["rayClusterConfig"]
    env = plain["headGroupSpec"]["template"]["spec"]["containers"][0].get("env") or []
    assert "KAITO_API_KEY" not in {e["name"] for e in env}
    assert serve_input(workspace(), PLAN).serve_args().get("api_key_env") is None
    ws = workspace()
    assert ws.inference is not None
    ws.inference.api_key_secret = "phi-key"
    cluster = build_rayservice(ws, PLAN, "x", "img")["spec"]["rayClusterConfig"]
    want = {"name": "KAITO_API_KEY", "valueFrom": {"secretKeyRef": {"name": "phi-key", "key": "API_KEY"}}}
    assert want in cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert want in cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["env"]
    assert serve_input(ws, PLAN).serve_args()["api_key_env"] == "KAITO_API_KEY"


def _rs(status: dict | None) -> dict:
    obj = build_rayservice(workspace(), PLAN, "x", "img")
    if status is not None:
        obj["status"] = status
    return obj


def test_rayservice_state_transitions() -> None:
    assert rayservice_state(None).reason == "RayServiceNotFound"
    st = rayservice_state(_rs(None))
    assert not st.ready and "KubeRay" in st.message
    st = rayservice_state(
        _rs({"activeServiceStatus": {"applicationStatuses": {"llm": {"status": "DEPLOYING"}}}})
    )
    assert not st.ready and st.reason == "ServeDeploying" and "llm=DEPLOYING" in st.message
    st = rayservice_state(
        _rs(
            {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "Initializing",
                        "message": "head pod pending",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ]
            }
        )
    )
    assert not st.ready and st.reason == "Initializing" and "head pod pending" in st.message
    st = rayservice_state(
        _rs(
            {
                "activeServiceStatus": {
                    "applicationStatuses": {
                        "llm": {"status": "DEPLOY_FAILED", "message": "ImportError: no module rayserve"}
                    }
                }
            }
        )
    )
    assert not st.ready and st.failed and "ImportError" in st.message
    st = rayservice_state(
        _rs({"activeServiceStatus": {"applicationStatuses": {"llm": {"status": "RUNNING"}}}})
    )
    assert st.ready
    st = rayservice_state(
        _rs(
            {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "NonZeroServeEndpoints",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                        "message": "",
                    }
                ]
            }
        )
    )
    assert st.ready


def test_tuning_job_shape_and_state() -> None:
    ws = workspace(
        tuning={
            "preset": {"name": "phi-3-mini-4k-instruct"},
            "method": "qlora",
            "input": {"urls": ["https://example.com/data.jsonl"]},
            "output": {"volumeSource": {"persistentVolumeClaim": {"claimName": "out"}}},
        }
    )
    job = build_tuning_job(ws, PLAN, "img:1")
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["python", "-m", "rayserve.tuning"]
    assert c["args"] == [
        "--model",
        "microsoft/Phi-3-mini-4k-instruct",
        "--method",
        "qlora",
        "--data",
        "https://example.com/data.jsonl",
        "--output",
        "/mnt/results",
    ]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "Workspace"
    assert not job_state(None).started
    assert job_state({"metadata": {"name": "j"}, "status": {"active": 1}}).started
    done = job_state(
        {"metadata": {"name": "j"}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    )
    assert done.succeeded
    failed = job_state(
        {
            "metadata": {"name": "j"},
            "status": {
                "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]
            },
        }
    )
    assert failed.failed and "BackoffLimitExceeded" in failed.message


def test_rayservice_state_first_deploy_is_reported_under_pending() -> None:
    pending = {"pendingServiceStatus": {"applicationStatuses": {"llm": {"status": "DEPLOYING"}}}}
    st = rayservice_state(_rs(pending))
    assert not st.ready and st.reason == "ServeDeploying"
    failed = {
        "pendingServiceStatus": {
            "applicationStatuses": {"llm": {"status": "DEPLOY_FAILED", "message": "OOM"}}
        }
    }
    st = rayservice_state(_rs(failed))
    assert st.failed and "OOM" in st.message


def test_rayservice_state_terminal_and_stale() -> None:
    invalid = {
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "ValidationFailed",
                "message": "bad serveConfigV2",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ]
    }
    st = rayservice_state(_rs(invalid))
    assert st.failed and "bad serveConfigV2" in st.message
    obj = _rs(
        {
            "observedGeneration": 1,
            "serviceStatus": "Running",
            "activeServiceStatus": {"applicationStatuses": {"llm": {"status": "RUNNING"}}},
        }
    )
    obj["metadata"]["generation"] = 2
    st = rayservice_state(obj)
    assert not st.ready and st.reason == "RayServiceUpdating"


def test_serve_config_sizes_placement_bundles_to_one_replica() -> None:
    import yaml

    from controller.workspace.serveconfig import build_serve_config

    ws = workspace(adapters=[{"source": {"name": "fr", "image": "reg/fr:1"}, "strength": "0.5"}])
    # a replica of tp 2 x pp 2 on one 4-GPU node; two nodes -> room for 2 replicas
    plan = Plan(
        "phi-3-mini-4k-instruct",
        "Standard_NC24s_v3",
        node_count=2,
        gpus_per_node=4,
        tensor_parallel=2,
        pipeline_parallel=2,
    )
    text = build_serve_config(ws, plan)
    assert text == build_serve_config(ws, plan)  # deterministic: no spurious RayService updates
    [app] = yaml.safe_load(text)["applications"]
    [dep] = app["deployments"]
    assert dep["placement_group_bundles"] == [{"CPU": 2, "GPU": 2}, {"CPU": 1, "GPU": 2}]
    assert dep["placement_group_strategy"] == "STRICT_PACK"
    assert dep["autoscaling_config"]["max_replicas"] == 2
    assert app["args"]["adapters"] == [{"name": "fr", "path": "/mnt/adapter/fr", "strength": 0.5}]
    assert app["args"]["parallel"]["workers"] == 2 and app["args"]["parallel"]["gpus_per_worker"] == 2
    assert app["args"]["parallel"]["tensor_parallel"] == 2  # two rank actors per stage, one GPU each
    # a replica larger than a node spreads its stages over nodes
    big = Plan(
        "phi-3-mini-4k-instruct",
        "Standard_NC6s_v3",
        node_count=2,
        gpus_per_node=1,
        tensor_parallel=1,
        pipeline_parallel=2,
    )
    [dep] = yaml.safe_load(build_serve_config(ws, big))["applications"][0]["deployments"]
    assert dep["placement_group_strategy"] == "PACK" and dep["autoscaling_config"]["max_replicas"] == 1


def test_serve_config_carries_the_capped_context() -> None:
    import yaml

    from controller.workspace.plan import plan_for
    from controller.workspace.serveconfig import build_serve_config

    ws = workspace(preset="phi-3-mini-128k-instruct", instance_type="Standard_NC6s_v3")
    plan = plan_for(ws)
    assert plan.max_context == 19712 and "context capped at 19712" in plan.message
    [app] = yaml.safe_load(build_serve_config(ws, plan))["applications"]
    assert app["args"]["model"]["max_context"] == 19712
    # the whole room is the engine's KV budget: four 4k-token sequences fit, not sixteen
    assert app["args"]["engine"]["kv_budget_tokens"] == plan.kv_budget_tokens
    assert 4 * 4096 <= plan.kv_budget_tokens < 16 * 4096
    # the demo's fake GPU has no real memory to keep to
    fake = workspace(preset="tiny-phi-3", instance_type="Standard_Fake_GPU")
    [app] = yaml.safe_load(build_serve_config(fake, plan_for(fake)))["applications"]
    assert app["args"]["engine"].get("kv_budget_tokens") is None


def test_tuning_job_reads_every_url_or_the_whole_input_directory() -> None:
    def data_args(inp: dict) -> list[str]:
        ws = workspace(tuning={"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "lora", "input": inp,
                               "output": {"volumeSource": {"emptyDir": {}}}})
        args = build_tuning_job(ws, PLAN, "img:1")["spec"]["template"]["spec"]["containers"][0]["args"]
        return [args[i + 1] for i, a in enumerate(args) if a == "--data"]

    urls = ["https://example.com/a.parquet", "https://example.com/b.jsonl"]
    assert data_args({"urls": urls}) == urls  # Kaito downloads each URL
    # an image's /data (or a volume) may hold train.parquet, not a fixed file name: pass the directory
    assert data_args({"image": "registry.example/data:1"}) == ["/mnt/data"]


def test_the_weights_cache_is_on_a_node_volume_nvme_where_the_sku_has_it() -> None:
    """A restarted serve container must not download the model again (issue 12, item 5)."""
    from dataclasses import replace

    ws = workspace()
    for plan, expected in ((PLAN, {"name": "model-cache", "emptyDir": {"sizeLimit": "50Gi"}}),
                           (replace(PLAN, local_nvme=True),
                            {"name": "model-cache",
                             "hostPath": {"path": "/mnt/kaito/model-cache", "type": "DirectoryOrCreate"}})):
        cluster = build_rayservice(ws, plan, "applications: []\n", "img:1")["spec"]["rayClusterConfig"]
        for template in (cluster["headGroupSpec"]["template"], cluster["workerGroupSpecs"][0]["template"]):
            spec = template["spec"]
            assert expected in spec["volumes"]
            container = spec["containers"][0]
            assert {"name": "HF_HOME", "value": "/mnt/model-cache"} in container["env"]
            assert {"name": "model-cache", "mountPath": "/mnt/model-cache"} in container["volumeMounts"]


def test_adapter_image_pull_secrets_reach_the_worker_pods() -> None:
    """They were accepted and never used, so a private adapter image could not be pulled."""
    adapters = [
        {"source": {"name": "a", "image": "reg.example.com/a:1", "imagePullSecrets": ["reg", "other"]}},
        {"source": {"name": "b", "image": "reg.example.com/b:1", "imagePullSecrets": ["reg"]}},
    ]
    cluster = build_rayservice(workspace(adapters=adapters), PLAN, "x", "img")["spec"]["rayClusterConfig"]
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]
    assert worker["imagePullSecrets"] == [{"name": "reg"}, {"name": "other"}]
    plain = build_rayservice(workspace(), PLAN, "x", "img")["spec"]["rayClusterConfig"]
    assert "imagePullSecrets" not in plain["workerGroupSpecs"][0]["template"]["spec"]
    tuning = {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "qlora",
              "input": {"image": "reg.example.com/data:1", "imagePullSecrets": ["reg"]},
              "output": {"volumeSource": {"emptyDir": {}}}}
    pod = build_tuning_job(workspace(tuning=tuning), PLAN, "img:1")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "reg"}]


def test_the_serve_config_and_the_tuning_job_carry_the_presets_pinned_revision() -> None:
    """An upstream push must not change the served model (issue 11, item 7): the pin reaches the
    loaders through the serve config's model spec and the trainer's ``--revision``."""
    import yaml

    from controller.workspace.plan import plan_for
    from controller.workspace.serveconfig import build_serve_config

    sha = "0a67737cc96d2554230f90338b163bc6380a2a85"  # Kaito v0.12's pin of Phi-3-mini-4k-instruct
    ws = workspace(preset="phi-3-mini-4k-instruct")
    plan = plan_for(ws)
    assert plan.model_revision == sha
    [app] = yaml.safe_load(build_serve_config(ws, plan))["applications"]
    assert app["args"]["model"]["path"] == "microsoft/Phi-3-mini-4k-instruct"
    assert app["args"]["model"]["revision"] == sha
    tune = workspace(tuning={"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "lora",
                             "input": {"urls": ["https://example.com/a.jsonl"]},
                             "output": {"volumeSource": {"emptyDir": {}}}},
                     instance_type="Standard_NC24ads_A100_v4")
    job = build_tuning_job(tune, plan_for(tune), "img:1")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--revision") + 1] == sha
    # a local checkpoint has no revision: none is sent
    local = workspace(preset="tiny-phi-3", instance_type="Standard_Fake_GPU")
    [app] = yaml.safe_load(build_serve_config(local, plan_for(local)))["applications"]
    assert app["args"]["model"].get("revision") is None


def _ray_templates(plan: Plan) -> list[dict]:
    ws = workspace(adapters=[{"source": {"name": "fr", "image": "reg/fr:1"}}])
    cluster = build_rayservice(ws, plan, "applications: []\n", "img:1")["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"], cluster["workerGroupSpecs"][0]["template"]]


def test_ray_pods_run_as_the_ray_user_without_capabilities_or_a_token() -> None:
    """Issue 11, item 4: the Ray pods ran with the image's defaults (capabilities, escalation)."""
    for template in _ray_templates(PLAN):
        spec = template["spec"]
        assert spec["automountServiceAccountToken"] is False
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (1000, 100, 100)
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["fsGroupChangePolicy"] == "OnRootMismatch"
        for c in [*spec["containers"], *spec.get("initContainers", [])]:  # the adapter puller too
            assert c["securityContext"] == {"allowPrivilegeEscalation": False,
                                            "capabilities": {"drop": ["ALL"]}}, c
        assert not any(c["name"] == "model-cache-owner" for c in spec.get("initContainers", []))  # emptyDir


def test_the_nvme_cache_is_given_to_the_ray_user_by_an_init_container_with_chown_only() -> None:
    from dataclasses import replace

    for template in _ray_templates(replace(PLAN, local_nvme=True)):
        spec = template["spec"]
        owner = spec["initContainers"][0]  # before the adapter puller and the Ray container
        assert owner["name"] == "model-cache-owner"
        assert owner["command"] == ["chown", "1000:100", "/mnt/model-cache"]  # that directory only
        assert owner["volumeMounts"] == [{"name": "model-cache", "mountPath": "/mnt/model-cache"}]
        assert owner["securityContext"] == {"runAsUser": 0, "runAsNonRoot": False,
                                            "allowPrivilegeEscalation": False,
                                            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}}
        [ray] = spec["containers"]
        assert ray["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_the_head_publishes_only_the_ports_used_and_starts_no_ray_client_server() -> None:
    """Issue 11, item 9: the Ray Client port (10001) was published though nothing uses it."""
    rs = build_rayservice(workspace(), PLAN, "applications: []\n", "img:1")
    head = rs["spec"]["rayClusterConfig"]["headGroupSpec"]
    [container] = head["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"gcs-server": 6379, "dashboard": 8265, "serve": names.SERVE_PORT, "metrics": 8080}
    assert head["rayStartParams"]["ray-client-server-port"] == "0"  # ray start: 0 = no client server
    [worker] = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"]
    assert "ports" not in worker


def test_every_ray_container_carries_serves_cluster_settings() -> None:
    """Serve's HTTP proxy takes its settings from the raylet's environment, not from the app's
    runtime_env: they must be in the head's and the workers' containers (rayserve.spec.CLUSTER_ENV)."""
    from rayserve.spec import CLUSTER_ENV

    cluster = build_rayservice(workspace(), PLAN, "x", "img")["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    assert CLUSTER_ENV["RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP"] == "0"
    for template in templates:
        [container] = [c for c in template["spec"]["containers"] if c["name"].startswith("ray-")]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert {k: env.get(k) for k in CLUSTER_ENV} == CLUSTER_ENV, container["name"]


@pytest.mark.parametrize("haproxy", [False, True], ids=["python-proxy", "haproxy"])
def test_haproxy_ingress_is_in_every_ray_container_only_when_asked_for(haproxy: bool) -> None:
    """HAProxy mode must reach the head (where HAProxy runs) and the workers (whose replicas then
    serve HTTP themselves); off by default (rayserve.spec.HAPROXY_ENV says why)."""
    rayservice = build_rayservice(workspace(), PLAN, "x", "img", serve_haproxy=haproxy)
    cluster = rayservice["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    for template in templates:
        [container] = [c for c in template["spec"]["containers"] if c["name"].startswith("ray-")]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env.get("RAY_SERVE_ENABLE_HA_PROXY") == ("1" if haproxy else None), container["name"]
