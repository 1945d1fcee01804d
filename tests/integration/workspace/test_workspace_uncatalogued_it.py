"""A model id the catalog lacks, on a real API server: the controller reads it from a hub
(hack/fake_hf_hub.py), sizes the nodes from its checkpoint, and says why when it cannot, before
any Machine exists. The provisioner's fake cloud brings the nodes, so ResourceReady goes True.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from ws_it_helpers import (
    conditions,
    events_for,
    machines_of,
    make_namespace,
    running_controller,
    running_provisioner,
    wait_for,
    workspace_manifest,
)

from controller.api.kinds import RAYSERVICES, WORKSPACES
from controller.runtime import Client
from controller.runtime.kinds import SECRETS
from controller.workspace import names
from hack.fake_hf_hub import FakeHub
from hack.tiny_model import DEFAULT_DIR, ensure_tiny_model

pytestmark = pytest.mark.integration

MODEL = "kaito-test/tiny-phi-3-uncatalogued"
GATED = "kaito-test/tiny-phi-3-gated"


def _ws(name: str, model: str, secret: str | None = None) -> dict:
    obj = workspace_manifest(name, preset=model, instance_type="Standard_Fake_GPU")
    if secret:
        obj["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": secret}
    return obj


def test_uncatalogued_models_are_sized_from_the_hub_or_refused_before_any_machine(
        ws_client: Client, ws_ns: str, kubeconfig: str, tmp_path: Path) -> None:
    client, ns = ws_client, ws_ns
    tiny = ensure_tiny_model(DEFAULT_DIR)
    mamba = tmp_path / "mamba"
    shutil.copytree(tiny, mamba)
    config = json.loads((mamba / "config.json").read_text())
    (mamba / "config.json").write_text(json.dumps({**config, "architectures": ["MambaForCausalLM"]}))
    inventory = make_namespace(client)
    with FakeHub() as hub:
        hub.add_repo(MODEL, tiny)
        hub.add_repo(GATED, tiny, token="hf_granted")
        hub.add_repo("kaito-test/mamba", mamba)
        client.create(SECRETS, {"metadata": {"name": "hf-token"}, "type": "Opaque",
                                "data": {"HF_TOKEN": base64.b64encode(b"hf_granted").decode()}}, ns)
        with running_provisioner(kubeconfig, inventory), running_controller(kubeconfig, hf_endpoint=hub.url):
            for name, model, secret in [("uncat", MODEL, None), ("mamba", "kaito-test/mamba", None),
                                        ("missing", "kaito-test/no-such-model", None),
                                        ("gated", GATED, None), ("granted", GATED, "hf-token")]:
                client.create(WORKSPACES, _ws(name, model, secret), ns)

            ready = wait_for(lambda: (c := conditions(client, ns, "uncat").get("ResourceReady"))
                             and c["status"] == "True" and c, 60, "ResourceReady=True, uncatalogued")
            assert f"Sized from {MODEL}'s config.json" in ready["message"], ready
            assert "Phi3ForCausalLM" in ready["message"] and "KiB per token" in ready["message"]
            assert "Standard_Fake_GPU" in ready["message"]  # the estimate follows
            assert len(machines_of(client, ns, "uncat")) == 1
            assert any(e["reason"] == "ModelResolved" for e in events_for(client, ns, "uncat"))
            # the serve config loads it by its id, from the operator's hub
            rs = wait_for(lambda: client.get(RAYSERVICES, names.rayservice_name("uncat"), ns), 30, "RS")
            assert f"path: {MODEL}" in rs["spec"]["serveConfigV2"]
            group = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
            worker = group["template"]["spec"]["containers"][0]
            assert {"name": "HF_ENDPOINT", "value": hub.url} in worker["env"]

            granted = wait_for(lambda: (c := conditions(client, ns, "granted").get("ResourceReady"))
                               and c["status"] == "True" and c, 60, "the gated model with its token")
            assert f"Sized from {GATED}'s config.json" in granted["message"]

            for name, reason, words in [
                ("mamba", "ModelArchitectureNotSupported", "MambaForCausalLM"),
                ("missing", "ModelNotFound", "kaito-test/no-such-model"),
                ("gated", "ModelAccessDenied", "modelAccessSecret"),
            ]:
                cond = wait_for(lambda n=name: (c := conditions(client, ns, n).get("ResourceReady"))
                                and c["reason"] != "MachinesPending" and c, 30, f"{name}'s condition")
                assert (cond["status"], cond["reason"]) == ("False", reason), cond
                assert words in cond["message"] and "trying again in" in cond["message"], cond
                assert client.get(WORKSPACES, name, ns)["status"]["state"] == "NotReady"
                assert not machines_of(client, ns, name), f"{name} must not buy nodes"
                warnings = [e for e in events_for(client, ns, name) if e["type"] == "Warning"]
                assert any(e["reason"] == reason for e in warnings), warnings
            # backoff: a handful of reads, not one per pass
            reads = [p for _, p in hub.requests if "no-such-model" in p]
            assert 1 <= len(reads) <= 3, reads
