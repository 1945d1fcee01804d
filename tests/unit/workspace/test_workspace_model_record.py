"""status.resolvedModel: an uncatalogued model resolved once, kept on the Workspace, reused by a
restarted controller without a hub read, and its commit pinned in the serve config."""

from __future__ import annotations

import copy

import yaml
from test_workspace_reconciler import WORKSPACE

from controller.api.kinds import RAYSERVICES, WORKSPACES
from controller.api.workspace import LABEL_WORKSPACE, Workspace
from controller.runtime import Request, Store
from controller.runtime.fake import FakeClient
from controller.workspace import model_record, names
from controller.workspace.machines import build_machine
from controller.workspace.reconciler import Options, Stores, WorkspaceReconciler
from hack.fake_hf_hub import FakeHub
from hack.tiny_model import DEFAULT_DIR, ensure_tiny_model

MODEL = "kaito-test/tiny-phi-3-uncatalogued"
READY = {"type": "Ready", "status": "True", "reason": "Ready", "lastTransitionTime": "2025-01-01T00:00:00Z"}


def _workspace() -> dict:
    obj = copy.deepcopy(WORKSPACE)
    obj["resource"] = {"instanceType": "Standard_Fake_GPU", "labelSelector": {"matchLabels": {"a": "b"}}}
    obj["inference"] = {"preset": {"name": MODEL}}
    return obj


def _reconciler(client: FakeClient, stores: Stores, endpoint: str) -> WorkspaceReconciler:
    return WorkspaceReconciler(client, stores, options=Options(hf_endpoint=endpoint, hf_timeout_seconds=2))


def _stores(obj: dict) -> Stores:
    stores = Stores(Store(), Store(), Store(), Store(), Store())
    stores.machines.add_label_index(LABEL_WORKSPACE)
    stores.workspaces.add(copy.deepcopy(obj))
    machine = build_machine(Workspace.model_validate(obj), 0, "Standard_Fake_GPU", None)
    machine["status"] = {"nodeName": "n0", "conditions": [READY]}
    stores.machines.add(machine)
    return stores


def test_a_restarted_controller_plans_from_the_record_with_the_hub_down_and_keeps_the_revision() -> None:
    obj = _workspace()
    client = FakeClient()
    client.add(WORKSPACES, copy.deepcopy(obj))
    stores = _stores(obj)
    with FakeHub() as hub:
        repo = hub.add_repo(MODEL, ensure_tiny_model(DEFAULT_DIR))
        _reconciler(client, stores, hub.url).reconcile(Request("ns", "phi"))
        endpoint = hub.url
    stored = client.objects[("workspaces", "ns", "phi")]
    kept = stored["status"]["resolvedModel"]
    assert (kept["name"], kept["revision"], kept["endpoint"]) == (MODEL, repo.sha, endpoint)
    assert kept["preset"]["architecture"] == "Phi3ForCausalLM" and kept["sizedFrom"].startswith("Sized from")
    rs = client.objects[("rayservices", "ns", names.rayservice_name("phi"))]
    model = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]["args"]["model"]
    assert (model["path"], model["revision"]) == (MODEL, repo.sha)  # the serve pods load that commit
    before = copy.deepcopy(stored["status"]["conditions"])

    # a new process (nothing in memory) and the hub gone: the same plan, the same RayService
    stores.workspaces.add(copy.deepcopy(stored))
    stores.rayservices.add(copy.deepcopy(rs))
    client.calls.clear()
    _reconciler(client, stores, endpoint).reconcile(Request("ns", "phi"))
    after = client.objects[("workspaces", "ns", "phi")]["status"]
    resource = next(c for c in after["conditions"] if c["type"] == "ResourceReady")
    assert resource["status"] == "True" and f"Sized from {MODEL}" in resource["message"], resource
    assert after["conditions"] == before and after["resolvedModel"] == kept
    assert not [c for c in client.calls if c[0] == "update" and c[1] == RAYSERVICES.plural]
    assert not [c for c in client.calls if c[0] == "update_status"]  # the record reads back equal: no churn


def test_a_record_of_another_model_or_one_that_no_longer_parses_is_not_used() -> None:
    obj = _workspace()
    record = {"name": MODEL, "revision": "abc", "preset": {"name": MODEL, "bogus": 1}}
    ws = Workspace.model_validate({**obj, "status": {"resolvedModel": record}})
    assert model_record.recalled(ws, MODEL) is None  # does not parse as a Preset
    assert model_record.recalled(ws, "kaito-test/other") is None
