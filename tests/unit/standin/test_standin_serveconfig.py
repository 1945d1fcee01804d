"""The stand-in's pure merge logic: many RayServices' serveConfigV2 -> one Serve config, and
Serve's application details -> KubeRay's applicationStatuses. No server needed."""

from __future__ import annotations

import pytest
import yaml

from hack.kuberay_standin.serveconfig import (
    ServeConfigError,
    all_running,
    application_statuses,
    merged_config,
    nest_route_prefix,
    parse_serve_config,
    split_serve_app_name,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Serve's pydantic fields

TWO_APPS = yaml.safe_dump(
    {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": 8000},
        "applications": [
            {"name": "llm", "route_prefix": "/", "import_path": "rayserve.app:build_app", "args": {"a": 1}},
            {"name": "tools", "route_prefix": "/tools/", "import_path": "m:app"},
        ],
    }
)


def test_apps_are_prefixed_and_routes_nested_under_the_rayservice():
    cfg = parse_serve_config("team-a", "phi", TWO_APPS)
    assert cfg.serve_names == {"llm": "team-a.phi.llm", "tools": "team-a.phi.tools"}
    assert cfg.apps["llm"]["route_prefix"] == "/team-a/phi"
    assert cfg.apps["tools"]["route_prefix"] == "/team-a/phi/tools"
    assert cfg.apps["llm"]["args"] == {"a": 1}
    assert cfg.ignored_keys == ["http_options", "proxy_location"]
    assert split_serve_app_name("team-a.phi.my.app") == ("team-a", "phi", "my.app")
    assert split_serve_app_name("someone-elses-app") is None


def test_unnamed_app_is_default_and_null_route_prefix_stays_null():
    text = yaml.safe_dump({"applications": [{"import_path": "m:app", "route_prefix": None}]})
    cfg = parse_serve_config("ns", "rs", text)
    assert list(cfg.apps) == ["default"]
    assert cfg.apps["default"]["route_prefix"] is None
    assert nest_route_prefix("ns", "rs", "chat") == "/ns/rs/chat"


def test_merge_is_deterministic_and_owns_http_options():
    a = parse_serve_config("ns", "b", TWO_APPS)
    b = parse_serve_config("ns", "a", TWO_APPS)
    merged = merged_config([a, b], "127.0.0.1", 41234)
    assert merged["http_options"] == {"host": "127.0.0.1", "port": 41234}
    assert [app["name"] for app in merged["applications"]] == [
        "ns.a.llm",
        "ns.a.tools",
        "ns.b.llm",
        "ns.b.tools",
    ]
    assert merged == merged_config([b, a], "127.0.0.1", 41234)
    assert merged_config([], "127.0.0.1", 1)["applications"] == []


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (None, "empty"),
        ("applications: [unclosed", "not valid YAML"),
        ("- a list", "mapping"),
        ("applications: []", "no 'applications'"),
        (yaml.safe_dump({"applications": [{"name": "x", "import_path": "nodot"}]}), "import path"),
        (
            yaml.safe_dump(
                {
                    "applications": [
                        {"name": "x", "import_path": "m:a", "route_prefix": "/"},
                        {"name": "y", "import_path": "m:b", "route_prefix": "/"},
                    ]
                }
            ),
            "route_prefix",
        ),
    ],
)
def test_undeployable_configs_are_rejected_with_a_message(text, needle):
    with pytest.raises(ServeConfigError, match=needle):
        parse_serve_config("ns", "rs", text)


def test_application_statuses_use_the_rayservice_own_app_names():
    cfg = parse_serve_config("ns", "rs", TWO_APPS)
    serve_apps = {
        "ns.rs.llm": {
            "status": "RUNNING",
            "message": "",
            "deployments": {"LLMServer": {"status": "HEALTHY", "message": ""}},
        },
        "ns.rs.tools": {"status": "DEPLOY_FAILED", "message": "No module named 'm'", "deployments": {}},
        "ns.other.llm": {"status": "RUNNING"},
    }
    statuses = application_statuses(cfg, serve_apps)
    assert statuses == {
        "llm": {"status": "RUNNING", "serveDeploymentStatuses": {"LLMServer": {"status": "HEALTHY"}}},
        "tools": {"status": "DEPLOY_FAILED", "message": "No module named 'm'"},
    }
    assert not all_running(cfg, statuses)
    statuses["tools"]["status"] = "RUNNING"
    assert all_running(cfg, statuses)
    assert not all_running(cfg, {"llm": {"status": "RUNNING"}})  # an app Serve does not report yet
