"""The chart's RBAC grants exactly what the operator's code calls: nothing missing (the process would
fail at run time) and nothing beyond (a compromised process could do more than its job).

The needed set is read from the code (``rbac_calls.scan``), so a new client call without its rule,
or a rule left behind when a call goes, fails here. Rendering needs helm, not a cluster.
"""

from __future__ import annotations

from typing import Any

import pytest
from rbac_calls import Grant, granted, python_files, scan

from hack.chart import Helm

pytestmark = pytest.mark.integration

FAKE = {"provisioner": {"cloud": "fake"}}
AZURE = {"provisioner": {"cloud": "azure", "azure": {
    "subscriptionId": "00000000-0000-0000-0000-000000000000", "resourceGroup": "rg", "clusterName": "aks",
    "workloadIdentity": {"clientId": "11111111-1111-1111-1111-111111111111"}}}}

# Functions whose calls never run under the chart: the controller registers its own webhook
# (create/replace/delete) only in local runs without --webhook-cert-dir; the chart mounts the cert
# and owns the configuration, and the controller only patches its caBundle.
LOCAL_ONLY = {"start_webhook": "self-registered local webhook", "stop_webhook": "its local unregistration"}

# Grants the API server asks for although no client call names them.
IMPLIED: dict[Grant, str] = {
    ("kaito.sh", "workspaces/finalizers", "update"):
        "RayServices, Services and Jobs name their Workspace as owner with blockOwnerDeletion, which "
        "the OwnerReferencesPermissionEnforcement admission plugin allows only with this",
}

# Calls the chart need not grant, and why.
NOT_GRANTED: dict[Grant, str] = {
    ("", "namespaces", "create"):
        "the fake cloud creates its inventory namespace only when missing; the chart's Role lives in "
        "that namespace, so it exists",
}

FAKE_CLOUD = "provisioner/cloud/fake.py"


def _rules(objs: list[dict[str, Any]], kind: str, name: str) -> list[dict]:
    (obj,) = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj["rules"]


def _controller_files():
    return [f for f in python_files("controller") if not str(f).endswith("runtime/fake.py")]


def _provisioner_files(*, fake: bool):
    files = [f for f in python_files("provisioner", "controller/runtime", "controller/api")
             if not str(f).endswith("runtime/fake.py")]
    return [f for f in files if str(f).endswith(FAKE_CLOUD) == fake or not str(f).endswith(FAKE_CLOUD)]


def _diff(have: set[Grant], need: set[Grant]) -> str:
    return f"granted but never called: {sorted(have - need)}; called but not granted: {sorted(need - have)}"


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    helm = Helm()
    return {"fake": helm.template(FAKE), "azure": helm.template(AZURE)}


def test_the_controller_is_granted_exactly_what_its_code_calls(rendered) -> None:
    need = scan(_controller_files(), LOCAL_ONLY).grants | set(IMPLIED)
    for objs in rendered.values():
        cluster = granted(_rules(objs, "ClusterRole", "kaito-controller"))
        leases = granted(_rules(objs, "Role", "kaito-controller-leader-election"))
        assert cluster | leases == need, _diff(cluster | leases, need)
        # the Lease only in the release namespace, never cluster-wide
        assert {g for g in cluster if g[1] == "leases"} == set()
        assert {g[1] for g in leases} == {"leases"}
        # the webhook configuration only by name
        (hook,) = [r for r in _rules(objs, "ClusterRole", "kaito-controller")
                   if r["resources"] == ["validatingwebhookconfigurations"]]
        assert hook["resourceNames"] == ["kaito-workspace-validation"]


def test_the_provisioner_is_granted_exactly_what_its_code_calls(rendered) -> None:
    base = scan(_provisioner_files(fake=False)).grants
    for objs in rendered.values():
        have = granted(_rules(objs, "ClusterRole", "kaito-provisioner")) | granted(
            _rules(objs, "Role", "kaito-provisioner-leader-election"))
        assert have == base, _diff(have, base)


def test_the_fake_clouds_extra_rules_are_exactly_what_the_fake_cloud_calls(rendered) -> None:
    objs = rendered["fake"]
    base = scan(_provisioner_files(fake=False)).grants
    fake = scan(_provisioner_files(fake=True)).grants - set(NOT_GRANTED)
    extra = granted(_rules(objs, "ClusterRole", "kaito-provisioner-fake-cloud")) | granted(
        _rules(objs, "Role", "kaito-provisioner-fake-cloud"))
    assert extra == fake - base, _diff(extra, fake - base)
    assert not [o for o in rendered["azure"] if "fake-cloud" in o["metadata"]["name"]]


def test_the_scan_sees_the_calls_it_must(rendered) -> None:
    """Guards the scanner itself: a few calls every version of the code makes."""
    need = scan(_controller_files(), LOCAL_ONLY)
    assert ("karpenter.sh", "machines", "create") in need.grants
    assert ("kaito.sh", "workspaces/status", "update") in need.grants
    assert ("ray.io", "rayservices", "watch") in need.grants  # an informer
    assert ("admissionregistration.k8s.io", "validatingwebhookconfigurations", "delete") not in need.grants
    assert ("admissionregistration.k8s.io", "validatingwebhookconfigurations", "delete") in scan(
        _controller_files()).grants  # what LOCAL_ONLY leaves out
