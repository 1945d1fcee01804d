"""Ray's token auth as the RayService asks KubeRay for it (controller/workspace/ray_auth.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_workspace_inference import PLAN
from ws_unit_helpers import workspace

from controller.api.rayservice import RayService
from controller.workspace import cluster_rollout, ray_auth
from controller.workspace.inference import build_rayservice
from hack.images.requirements import pinned_version, requirements

REPO = Path(__file__).resolve().parents[3]


def _cluster(**kwargs: bool) -> dict:
    rs = build_rayservice(workspace(), PLAN, "applications: []\n", "img:1", **kwargs)
    return rs["spec"]["rayClusterConfig"]


def test_token_auth_is_asked_of_kuberay_by_default_with_the_serve_images_ray_version() -> None:
    cluster = _cluster()
    assert cluster["authOptions"] == {"mode": "token"}  # KubeRay makes and injects the token
    assert cluster["rayVersion"] == ray_auth.RAY_VERSION  # KubeRay refuses token auth without one
    parsed = RayService.model_validate({"metadata": {"name": "x"}, "spec": {"rayClusterConfig": cluster}})
    assert parsed.spec.ray_cluster_config.auth_options is not None
    assert parsed.spec.ray_cluster_config.auth_options.mode == "token"


def test_off_leaves_no_auth_options_and_a_different_cluster_hash() -> None:
    on, off = _cluster(), _cluster(ray_token_auth=False)
    assert "authOptions" not in off and off["rayVersion"] == ray_auth.RAY_VERSION
    # turning auth on or off replaces the running cluster (its pods' env changes): cluster_rollout
    assert cluster_rollout.cluster_hash(on) != cluster_rollout.cluster_hash(off)


def test_the_ray_version_is_the_pinned_ray() -> None:
    reqs = requirements(REPO / "pyproject.toml", ["serve"])
    assert pinned_version(reqs, "ray") == ray_auth.RAY_VERSION


def test_no_pod_template_sets_what_kuberay_injects() -> None:
    """KubeRay adds RAY_AUTH_MODE/RAY_AUTH_TOKEN only where a container lacks them: one of ours
    would silently win (and RAY_AUTH_MODE=disabled would switch auth off)."""
    ws = workspace(inference={"preset": {"name": "phi-3-mini-4k-instruct",
                                         "presetOptions": {"modelAccessSecret": "hf"}},
                              "apiKeySecret": "phi-key"})
    cluster = build_rayservice(ws, PLAN, "x", "img")["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    containers = [c for t in templates
                  for c in [*t["spec"]["containers"], *t["spec"].get("initContainers", [])]]
    names = [e["name"] for c in containers for e in c.get("env", [])]
    assert "HF_TOKEN" in names and not set(names) & set(ray_auth.KUBERAY_SET_ENV), names


@pytest.mark.parametrize(("cluster", "secret"), [
    ("phi-rs-abcde", "phi-rs-abcde"),
    ("a" * 47 + "-abcde", "a" * 44 + "-abcde"),  # the last 50 characters, as KubeRay's CheckName
    ("x" * 6 + "1" + "y" * 43 + "-abcde", "r" + "y" * 43 + "-abcde"),  # no leading digit
])
def test_the_token_secret_is_named_as_kuberay_names_it(cluster: str, secret: str) -> None:
    assert ray_auth.token_secret_name(cluster) == secret
