"""The KubeRay stand-in against the real kube-apiserver and a real local Ray head: RayService
create -> DEPLOYING -> RUNNING/Ready with the app answering HTTP; serveConfigV2 update -> in-place
redeploy; broken import_path -> DEPLOY_FAILED with Serve's message; delete -> app gone from Serve."""

from __future__ import annotations

import threading

import pytest
import yaml
from k8s_helpers import wait_for_events
from standin_helpers import (
    app_status,
    condition,
    echo_serve_config,
    get_rs,
    http_get_json,
    is_ready,
    rayservice,
    serve_apps,
    wait_for,
    wait_ready,
)

from controller.api.kinds import RAYSERVICES
from controller.api.rayservice import RayService
from hack.kuberay_standin.controller import serve_endpoint

pytestmark = [
    pytest.mark.integration,
    pytest.mark.serve,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # Ray Serve's pydantic v1-style fields
]


class StatusRecorder:
    """Every status the stand-in writes for one RayService, read from a watch."""

    def __init__(self, client, namespace: str, name: str) -> None:  # type: ignore[no-untyped-def]
        self.statuses: list[dict] = []
        self._stream = client.watch(
            RAYSERVICES, namespace, timeout_seconds=120, field_selector=f"metadata.name={name}"
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for ev in self._stream:
                if ev["type"] in ("ADDED", "MODIFIED"):
                    self.statuses.append(ev["object"].get("status") or {})
        except Exception:
            pass

    def close(self) -> None:
        self._stream.close()


def apps(standin) -> dict:  # type: ignore[no-untyped-def]
    """Serve's apps on the module's head, asked with its auth token."""
    return serve_apps(standin.head.dashboard_url, standin.head.auth_headers)


def test_create_deploys_reports_kuberay_status_and_answers_http(standin, rs_client, rs_namespace):
    rec = StatusRecorder(rs_client, rs_namespace, "echo")
    try:
        rs_client.create(RAYSERVICES, rayservice("echo", rs_namespace, echo_serve_config("hello")))
        obj = wait_ready(rs_client, rs_namespace, "echo")
    finally:
        rec.close()
    st = obj["status"]

    # KubeRay's shape: pending cluster while initializing, promoted to active once all apps RUN.
    seen = [
        (s.get("pendingServiceStatus") or {}).get("applicationStatuses", {}).get("echo", {}).get("status")
        for s in rec.statuses
    ]
    assert {"DEPLOYING", "NOT_STARTED"} & set(seen), rec.statuses
    first = next(s for s in rec.statuses if s.get("conditions"))
    assert condition({"status": first}, "Ready")["reason"] == "Initializing"
    assert condition(obj, "Ready")["reason"] == "NonZeroServeEndpoints"
    assert condition(obj, "UpgradeInProgress")["status"] == "False"
    assert st["serviceStatus"] == "Running"
    assert st["numServeEndpoints"] == 1
    assert st["observedGeneration"] == 1
    assert "pendingServiceStatus" not in st
    echo = app_status(obj, "echo")
    assert echo["status"] == "RUNNING"
    assert echo["serveDeploymentStatuses"]["Echo"]["status"] == "HEALTHY"
    # the operator's own model reads it as KubeRay's
    model = RayService.from_k8s(obj)
    assert model.is_ready and model.application_status("echo").status == "RUNNING"

    # the serve URL plays <name>-serve-svc.<ns>:8000; the app answers at it
    assert serve_endpoint(obj) == f"http://127.0.0.1:{standin.serve_port}/{rs_namespace}/echo"
    code, body = http_get_json(serve_endpoint(obj))
    assert code == 200 and body["message"] == "hello"
    assert f"{rs_namespace}.echo.echo" in apps(standin)
    wait_for_events(rs_client, rs_namespace, "echo", {"UpdatedServeApplications"}, timeout=20)


def test_serve_config_update_redeploys_in_place(standin, rs_client, rs_namespace):
    rs_client.create(RAYSERVICES, rayservice("upd", rs_namespace, echo_serve_config("v1")))
    obj = wait_ready(rs_client, rs_namespace, "upd")
    url = serve_endpoint(obj)
    assert http_get_json(url)[1]["message"] == "v1"

    rs_client.patch(RAYSERVICES, "upd", {"spec": {"serveConfigV2": echo_serve_config("v2")}}, rs_namespace)
    obj = wait_ready(rs_client, rs_namespace, "upd", generation=2)
    wait_for(lambda: http_get_json(url)[1].get("message") == "v2", 60, "the redeployed app answering v2")
    assert condition(obj, "Ready")["observedGeneration"] == 2
    assert obj["status"]["activeServiceStatus"]["rayClusterName"] == "upd-standin"  # in place, no new cluster


def test_broken_import_path_is_deploy_failed_with_message(standin, rs_client, rs_namespace):
    cfg = echo_serve_config(import_path="standin_no_such_module:build")
    rs_client.create(RAYSERVICES, rayservice("broken", rs_namespace, cfg))

    def failed() -> dict | None:
        obj = get_rs(rs_client, rs_namespace, "broken")
        app = app_status(obj, "echo", "pendingServiceStatus")
        return obj if app.get("status") in ("DEPLOY_FAILED", "UNHEALTHY") else None

    obj = wait_for(failed, 90, "the broken app DEPLOY_FAILED")
    app = app_status(obj, "echo", "pendingServiceStatus")
    assert "standin_no_such_module" in app["message"]
    ready = condition(obj, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "Initializing"
    assert "serviceStatus" not in obj["status"]
    assert "activeServiceStatus" not in obj["status"]


def test_invalid_serve_config_is_validation_failed_and_others_keep_running(standin, rs_client, rs_namespace):
    rs_client.create(RAYSERVICES, rayservice("good", rs_namespace, echo_serve_config("fine")))
    bad = yaml.safe_dump({"applications": [{"name": "a", "import_path": "noseparator"}]})
    rs_client.create(RAYSERVICES, rayservice("bad", rs_namespace, bad))

    def has_ready() -> dict | None:
        obj = get_rs(rs_client, rs_namespace, "bad")
        return obj if condition(obj, "Ready") else None

    obj = wait_for(has_ready, 30, "a status on the invalid RayService")
    ready = condition(obj, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ValidationFailed"
    assert "import path" in ready["message"]
    good = wait_ready(rs_client, rs_namespace, "good")
    assert http_get_json(serve_endpoint(good))[1]["message"] == "fine"


def test_two_rayservices_with_the_same_app_name_do_not_collide(standin, rs_client, rs_namespace):
    rs_client.create(RAYSERVICES, rayservice("one", rs_namespace, echo_serve_config("first")))
    rs_client.create(RAYSERVICES, rayservice("two", rs_namespace, echo_serve_config("second")))
    one = wait_ready(rs_client, rs_namespace, "one")
    two = wait_ready(rs_client, rs_namespace, "two")
    assert http_get_json(serve_endpoint(one))[1]["message"] == "first"
    assert http_get_json(serve_endpoint(two))[1]["message"] == "second"
    # an app's own route_prefix stays below the RayService's URL
    assert http_get_json(serve_endpoint(one) + "/")[1]["path"].startswith(f"/{rs_namespace}/one")


def test_delete_removes_the_app_from_serve(standin, rs_client, rs_namespace):
    rs_client.create(RAYSERVICES, rayservice("gone", rs_namespace, echo_serve_config("bye")))
    obj = wait_ready(rs_client, rs_namespace, "gone")
    url = serve_endpoint(obj)
    serve_name = f"{rs_namespace}.gone.echo"
    assert serve_name in apps(standin)

    rs_client.delete(RAYSERVICES, "gone", rs_namespace)
    wait_for(lambda: serve_name not in apps(standin), 60, "the app gone from Serve")
    assert http_get_json(url)[0] == 404


def test_rayserve_builder_config_answers_chat(standin, rs_client, rs_namespace):
    """The operator's real serve config (rayserve.builder, CPU layout of the fake SKU) with the tiny
    checkpoint: Ready through the stand-in, and /chat answers below its serve endpoint."""
    import httpx

    from hack.tiny_model import ensure_tiny_model
    from rayserve.builder import AutoscalingSpec, ServeConfigInput, build_serve_config
    from rayserve.spec import ModelSpec

    text = build_serve_config(
        ServeConfigInput(
            model=ModelSpec(name="tiny-phi-3", path=str(ensure_tiny_model()), max_context=256),
            autoscaling=AutoscalingSpec(min_replicas=1, initial_replicas=1, max_replicas=1),
            gpus_per_worker=0,
            cpus_per_worker=0.5,
            replica_cpus=0.5,
        )
    )
    rs_client.create(RAYSERVICES, rayservice("tiny", rs_namespace, text))
    obj = wait_ready(rs_client, rs_namespace, "tiny", timeout=180)
    assert app_status(obj, "llm")["serveDeploymentStatuses"]["LLMServer"]["status"] == "HEALTHY"
    resp = httpx.post(
        serve_endpoint(obj) + "/chat",
        json={"prompt": "hello", "generate_kwargs": {"max_new_tokens": 4}},
        timeout=120,
    )
    assert resp.status_code == 200, resp.text
    assert isinstance(resp.json()["Result"], str)


def test_replica_failing_health_checks_makes_the_app_unhealthy(standin, rs_client, rs_namespace):
    """After promotion an app can still turn UNHEALTHY; as in KubeRay, Ready stays True (the proxy
    still has endpoints) and the operator learns it from applicationStatuses."""
    cfg = yaml.safe_load(echo_serve_config("sick", fail_health_after_s=3))
    cfg["applications"][0]["deployments"] = [
        {"name": "Echo", "health_check_period_s": 0.5, "health_check_timeout_s": 1}
    ]
    rs_client.create(RAYSERVICES, rayservice("sick", rs_namespace, yaml.safe_dump(cfg)))
    wait_ready(rs_client, rs_namespace, "sick")

    def unhealthy() -> dict | None:
        obj = get_rs(rs_client, rs_namespace, "sick")
        return obj if app_status(obj, "echo").get("status") == "UNHEALTHY" else None

    obj = wait_for(unhealthy, 60, "the app reported UNHEALTHY", interval=0.1)
    dep = app_status(obj, "echo")["serveDeploymentStatuses"]["Echo"]
    assert dep["status"] == "UNHEALTHY" and dep.get("message")
    assert condition(obj, "Ready")["status"] == "True"
    assert RayService.from_k8s(obj).failed_applications().keys() == {"echo"}


def test_initializing_timeout_annotation_is_terminal_and_removes_the_app(standin, rs_client, rs_namespace):
    """KubeRay's ray.io/initializing-timeout: never Ready within it -> Ready=False/InitializingTimeout,
    the cluster (here: the apps) goes away, and the RayService stays failed."""
    obj = rayservice("slow", rs_namespace, echo_serve_config(import_path="standin_no_such_module:build"))
    obj["metadata"]["annotations"] = {"ray.io/initializing-timeout": "3s"}
    rs_client.create(RAYSERVICES, obj)

    def timed_out() -> dict | None:
        got = get_rs(rs_client, rs_namespace, "slow")
        cond = condition(got, "Ready")
        return got if cond and cond["reason"] == "InitializingTimeout" else None

    got = wait_for(timed_out, 60, "Ready=False/InitializingTimeout")
    assert condition(got, "Ready")["status"] == "False"
    assert "timeout of 3s" in condition(got, "Ready")["message"]
    wait_for(
        lambda: f"{rs_namespace}.slow.echo" not in apps(standin), 30, "app removed"
    )
    wait_for_events(rs_client, rs_namespace, "slow", {"RayServiceInitializingTimeout"}, timeout=20)


def test_restarted_standin_attaches_keeps_apps_and_drops_deleted_ones(standin, rs_client, rs_namespace):
    """Runs last in the module: stops the module's reconciler (its head keeps running), then a new
    stand-in attaches with --ray-address semantics. Apps of live RayServices keep serving, the app
    of a RayService deleted while no stand-in ran is removed, and stopping an attached stand-in
    leaves the head alone."""
    from hack.kuberay_standin.ray_head import RayHead, dashboard_up
    from hack.kuberay_standin.standin import Standin

    rs_client.create(RAYSERVICES, rayservice("keep", rs_namespace, echo_serve_config("kept")))
    rs_client.create(RAYSERVICES, rayservice("drop", rs_namespace, echo_serve_config("dropped")))
    keep = wait_ready(rs_client, rs_namespace, "keep")
    wait_ready(rs_client, rs_namespace, "drop")
    standin.manager.stop()
    rs_client.delete(RAYSERVICES, "drop", rs_namespace)
    dashboard = standin.head.dashboard_url
    assert f"{rs_namespace}.drop.echo" in apps(standin)  # nobody reconciled the delete

    # attached to a head with auth: the token is the caller's to give (the CLI: $RAY_AUTH_TOKEN)
    again = Standin(rs_client, RayHead(auth_token=standin.head.auth_token), ray_address=dashboard,
                    poll_interval=1.0).start()
    try:
        assert again.serve_port == standin.serve_port  # read from the running Serve
        wait_for(
            lambda: f"{rs_namespace}.drop.echo" not in apps(standin), 60, "the orphaned app gone"
        )
        assert http_get_json(serve_endpoint(keep))[1]["message"] == "kept"
        rs_client.create(RAYSERVICES, rayservice("after", rs_namespace, echo_serve_config("new")))
        after = wait_ready(rs_client, rs_namespace, "after")
        assert http_get_json(serve_endpoint(after))[1]["message"] == "new"
        assert is_ready(get_rs(rs_client, rs_namespace, "keep"))
    finally:
        again.stop()
    assert standin.head.running and dashboard_up(dashboard, headers=standin.head.auth_headers)
