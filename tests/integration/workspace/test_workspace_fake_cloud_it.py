"""The workspace controller with the real provisioner and its fake cloud, on a real API server.

Nothing is faked by the test except KubeRay's status: the provisioner launches fake VMs for our
Machines, registers Nodes carrying the Machines' labels and taints, and marks the Machines Ready.
So this checks the contract between the two controllers: the RayService's pod pinning matches
the labels and taints the Nodes really get, launch failures reach the Workspace's status, and
deletion goes through the provisioner's termination finalizer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from ws_it_helpers import (
    NAMESPACES,
    conditions,
    gone,
    machines_of,
    make_namespace,
    running_controller,
    set_rayservice_running,
    wait_for,
    workspace_manifest,
)

from controller.api.kinds import RAYSERVICES, WORKSPACES
from controller.runtime import Client, RestClient
from controller.runtime.kinds import NODES
from controller.workspace import names
from provisioner.main import Config, Provisioner, build

pytestmark = pytest.mark.integration



@contextlib.contextmanager
def running_provisioner(kubeconfig: str, inventory_ns: str) -> Iterator[Provisioner]:
    client = RestClient.from_kubeconfig(kubeconfig)
    config = Config(
        cloud="fake",
        leader_election=False,
        health_port=None,
        metrics_port=None,
        fake_namespace=inventory_ns,
        fake_delay=0.3,
        fake_ready_delay=0.3,
        fake_tick=0.2,
    )
    prov = build(client, config)
    prov.start()
    try:
        yield prov
    finally:
        prov.stop()
        client.close()


def test_workspace_on_fake_cloud_nodes(ws_client: Client, ws_ns: str, kubeconfig: str) -> None:
    client, ns = ws_client, ws_ns
    inventory = make_namespace(client)
    with running_provisioner(kubeconfig, inventory) as prov, running_controller(kubeconfig):
        client.create(WORKSPACES, workspace_manifest("phi", count=2), ns)
        wait_for(
            lambda: conditions(client, ns, "phi").get("ResourceReady", {}).get("status") == "True",
            60,
            "ResourceReady=True on fake-cloud nodes",
        )
        ws = client.get(WORKSPACES, "phi", ns)
        nodes = [client.get(NODES, n) for n in ws["status"]["workerNodes"]]
        assert len(nodes) == 2
        rs = wait_for(lambda: client.get(RAYSERVICES, names.rayservice_name("phi"), ns), what="RayService")
        for group in (
            rs["spec"]["rayClusterConfig"]["headGroupSpec"],
            rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0],
        ):
            pod = group["template"]["spec"]
            for node in nodes:  # the pinning really selects these nodes and tolerates their taints
                labels = node["metadata"]["labels"]
                assert all(labels.get(k) == v for k, v in pod["nodeSelector"].items()), labels
                for taint in node["spec"].get("taints") or []:
                    assert any(
                        t["key"] == taint["key"] and t["effect"] == taint["effect"]
                        for t in pod["tolerations"]
                    ), taint
        set_rayservice_running(client, ns, rs["metadata"]["name"])
        wait_for(lambda: conditions(client, ns, "phi")["WorkspaceReady"]["status"] == "True", what="ready")

        # a quota failure in the cloud shows up in ResourceReady, with the cloud's reason
        prov.provider.fail("quota", "Standard_NC24ads_A100_v4")  # type: ignore[attr-defined]
        client.create(WORKSPACES, workspace_manifest("big", instance_type="Standard_NC24ads_A100_v4"), ns)
        rr = wait_for(
            lambda: (
                (c := conditions(client, ns, "big").get("ResourceReady"))
                and c["reason"] == "MachineLaunchFailed"
                and c
            ),
            30,
            "MachineLaunchFailed",
        )
        assert "QuotaExceeded" in rr["message"] or "quota" in rr["message"].lower()
        assert client.get(WORKSPACES, "big", ns)["status"]["state"] == "NotReady"

        # delete: Machines go through the provisioner's termination finalizer, then the Workspace
        for name in ("phi", "big"):
            client.delete(WORKSPACES, name, ns)
        wait_for(
            lambda: not machines_of(client, ns, "phi") and not machines_of(client, ns, "big"),
            60,
            "machines deleted",
        )
        wait_for(
            lambda: gone(client, WORKSPACES, "phi", ns) and gone(client, WORKSPACES, "big", ns),
            30,
            "workspaces gone",
        )
        for node in nodes:
            wait_for(lambda n=node: gone(client, NODES, n["metadata"]["name"]), 30, "node gone")
    client.delete(NAMESPACES, inventory)
