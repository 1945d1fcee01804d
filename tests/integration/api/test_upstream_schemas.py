"""What the controller builds, through the schemas of the projects that read it.

A field a CRD schema does not know is pruned silently on a plain create, so a RayService or a
Machine we build could lose a setting only in a real cluster. Each object is created here with
``fieldValidation=Strict`` (the API server rejects unknown fields instead of pruning them) against
the upstream CRDs (KubeRay's and Karpenter's NodeClaim from their Go modules, Kaito v0.3.2's
Machine, whose CEL rules run too), and what is stored must
contain everything we sent, unchanged; the server may add its schema defaults, nothing else.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from k8s_helpers import install_project_crds

from controller.api.kinds import MACHINES, NODECLAIMS, RAYSERVICES
from controller.api.nodeapi import MACHINE_API, NODECLAIM_API, NodeAPI
from controller.api.workspace import Workspace
from controller.runtime.client import ResourceKind
from controller.workspace.inference import build_rayservice
from controller.workspace.machines import build_node_request
from controller.workspace.plan import plan_for
from controller.workspace.serveconfig import build_serve_config

pytestmark = pytest.mark.integration

IMAGE = "rayproject/ray:2.60.0-py311"


@pytest.fixture(scope="module")
def upstream(kube):
    install_project_crds(kube, (MACHINES, NODECLAIMS, RAYSERVICES))
    return kube


def not_kept(sent: Any, stored: Any, path: str = "") -> list[str]:
    """Paths of what ``sent`` has that ``stored`` lacks or holds differently (pruned or changed)."""
    if isinstance(sent, dict):
        if not isinstance(stored, dict):
            return [f"{path}: {stored!r} instead of an object"]
        return [p for key, value in sent.items()
                for p in (not_kept(value, stored[key], f"{path}.{key}") if key in stored
                          else [f"{path}.{key}: pruned"])]
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(stored) != len(sent):
            return [f"{path}: {stored!r} instead of {sent!r}"]
        pairs = enumerate(zip(sent, stored, strict=True))
        return [p for i, (a, b) in pairs for p in not_kept(a, b, f"{path}[{i}]")]
    return [] if sent == stored else [f"{path}: {stored!r} instead of {sent!r}"]


def create_strict(client, kind: ResourceKind, obj: dict) -> dict:
    namespace = obj["metadata"].get("namespace")
    body = {"apiVersion": kind.api_version, "kind": kind.kind, **obj}
    return client.request("POST", kind.path(namespace), query=[("fieldValidation", "Strict")], body=body)


def workspace(namespace: str, preset: str, instance_type: str, **resource: Any) -> Workspace:
    return Workspace.model_validate({
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
        "metadata": {"name": f"w{uuid.uuid4().hex[:6]}", "namespace": namespace, "uid": str(uuid.uuid4())},
        "resource": {"instanceType": instance_type, "labelSelector": {"matchLabels": {"apps": "x"}},
                     **resource},
        "inference": {"preset": {"name": preset},
                      "adapters": [{"source": {"name": "fr", "image": "reg/fr:1"}, "strength": "0.5"}]},
    })


@pytest.mark.parametrize(("preset", "instance_type", "count"), [
    ("phi-3-mini-4k-instruct", "Standard_NC12s_v3", 2),
    ("tiny-phi-3", "Standard_Fake_GPU", 1),
])
def test_our_rayservice_passes_kuberays_schema_unchanged(upstream, namespace, preset, instance_type, count):
    ws = workspace(namespace, preset, instance_type, count=count)
    plan = plan_for(ws)
    rs = build_rayservice(ws, plan, build_serve_config(ws, plan), IMAGE)
    stored = create_strict(upstream, RAYSERVICES, rs)
    assert not_kept(rs["spec"], stored["spec"]) == []
    assert not_kept(rs["metadata"]["labels"], stored["metadata"]["labels"]) == []


@pytest.mark.parametrize("api", [MACHINE_API, NODECLAIM_API], ids=lambda a: a.name)
def test_our_node_objects_pass_the_upstream_schemas_unchanged(upstream, namespace, api: NodeAPI):
    """Machines through Kaito v0.3.2's CRD, NodeClaims through Karpenter v1.10's (CEL included:
    no karpenter.sh requirement keys but the NodePool's, a nodeClassRef with all three parts)."""
    ws = workspace(namespace, "phi-3-mini-4k-instruct", "Standard_NC12s_v3")
    obj = build_node_request(api, ws, 0, "Standard_NC12s_v3", 50)
    stored = create_strict(upstream, api.kind, obj)
    try:
        assert not_kept(obj["spec"], stored["spec"]) == []
        assert not_kept(obj["metadata"], stored["metadata"]) == []
    finally:
        upstream.delete(api.kind, obj["metadata"]["name"])


def test_strict_creation_does_reject_what_a_schema_lacks(upstream, namespace):
    """The check above means something: a field KubeRay's schema lacks is refused, not pruned."""
    ws = workspace(namespace, "tiny-phi-3", "Standard_Fake_GPU")
    plan = plan_for(ws)
    rs = build_rayservice(ws, plan, "applications: []\n", IMAGE)
    rs["spec"]["rayClusterConfig"]["notAKubeRayField"] = True
    with pytest.raises(Exception, match="notAKubeRayField"):
        create_strict(upstream, RAYSERVICES, rs)
