"""The workspace controller with the real provisioner and its fake cloud, on a real API server.

Nothing is faked by the test except KubeRay's status: the provisioner launches fake VMs for our
Machines, registers Nodes carrying the Machines' labels and taints, and marks the Machines Ready.
So this checks the contract between the two controllers: the RayService's pod pinning matches
the labels and taints the Nodes really get, launch failures reach the Workspace's status, and
deletion goes through the provisioner's termination finalizer.
"""

from __future__ import annotations

import pytest
from ws_it_helpers import (
    NAMESPACES,
    conditions,
    gone,
    machines_of,
    make_namespace,
    running_controller,
    running_provisioner,
    set_rayservice_running,
    wait_for,
    workspace_manifest,
)

from controller.api.kinds import MACHINES, NODECLAIMS, RAYSERVICES, WORKSPACES
from controller.api.nodeapi import MACHINE_API, NODECLAIM_API, NodeAPI
from controller.runtime import Client
from controller.runtime.kinds import NETWORKPOLICIES, NODES
from controller.workspace import names

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("api", [NODECLAIM_API, MACHINE_API], ids=lambda a: a.name)
def test_workspace_on_fake_cloud_nodes(ws_client: Client, ws_ns: str, kubeconfig: str, api: NodeAPI) -> None:
    """The whole loop with NodeClaims (Karpenter v1) and with Machines: one lifecycle, two shapes."""
    client, ns = ws_client, ws_ns
    inventory = make_namespace(client)
    with (running_provisioner(kubeconfig, inventory, api.name) as prov,
          running_controller(kubeconfig, node_api=api)):
        client.create(WORKSPACES, workspace_manifest("phi", count=2), ns)
        wait_for(
            lambda: conditions(client, ns, "phi").get("ResourceReady", {}).get("status") == "True",
            60,
            "ResourceReady=True on fake-cloud nodes",
        )
        ws = client.get(WORKSPACES, "phi", ns)
        nodes = [client.get(NODES, n) for n in ws["status"]["workerNodes"]]
        assert len(nodes) == 2
        other = MACHINES if api is NODECLAIM_API else NODECLAIMS
        assert len(machines_of(client, ns, "phi", api.kind)) == 2
        assert not machines_of(client, ns, "phi", other)
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
        # the Ray pods admit clients on the serve port only (the API server accepts the policy)
        policy = wait_for(lambda: client.get(NETWORKPOLICIES, names.service_name("phi"), ns), 30, "policy")
        assert policy["spec"]["podSelector"]["matchLabels"] == {names.LABEL_WORKSPACE: "phi"}
        open_ports = [r["ports"] for r in policy["spec"]["ingress"] if "from" not in r]
        assert open_ports == [[{"protocol": "TCP", "port": names.SERVE_PORT}]], policy["spec"]
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
            lambda: not any(machines_of(client, ns, w, api.kind) for w in ("phi", "big")),
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


def test_a_node_that_never_registers_is_recreated_with_backoff_then_given_up(
        ws_client: Client, ws_ns: str, kubeconfig: str) -> None:
    """Issue 11 item 11: the provisioner deletes a Machine whose Node never registers; the workspace
    re-creates it a bounded number of times, backing off, then stops and says why in ResourceReady.
    The count lives on the Workspace, so a restarted controller does not start over."""
    from controller.workspace import relaunch

    client, ns = ws_client, ws_ns
    inventory = make_namespace(client)
    sku = "Standard_NC24ads_A100_v4"
    with running_provisioner(kubeconfig, inventory, registration_ttl=1.5) as prov:
        prov.provider.set_boot_delay(float("inf"), sku)  # type: ignore[attr-defined]
        with running_controller(kubeconfig, relaunch=(2, 0.5)):
            client.create(WORKSPACES, workspace_manifest("stuck", instance_type=sku), ns)
            wait_for(lambda: relaunch.parse(client.get(WORKSPACES, "stuck", ns)["metadata"].get(
                "annotations")).failures >= 1, 60, "one re-creation counted")
        # a fresh controller reads the count from the Workspace and goes on from there
        with running_controller(kubeconfig, relaunch=(2, 0.5)):
            rr = wait_for(
                lambda: ((c := conditions(client, ns, "stuck").get("ResourceReady"))
                         and c["reason"] == "MachineRelaunchLimitReached" and c),
                90, "the workspace gives up")
            assert "RegistrationTimeout" in rr["message"], rr["message"]
            assert client.get(WORKSPACES, "stuck", ns)["status"]["state"] == "NotReady"
            record = relaunch.parse(client.get(WORKSPACES, "stuck", ns)["metadata"]["annotations"])
            assert record.failures == 2
            # it stays stopped: no new Machine once the last one is gone
            wait_for(lambda: not machines_of(client, ns, "stuck"), 30, "the last machine deleted")
            import time
            time.sleep(3)
            assert not machines_of(client, ns, "stuck")
            client.delete(WORKSPACES, "stuck", ns)
            wait_for(lambda: gone(client, WORKSPACES, "stuck", ns), 30, "workspace gone")
    client.delete(NAMESPACES, inventory)
