"""Objects written by the previous version (the seed's status) are read and healed by this one.

The seed wrote ``WorkspaceReady`` for an inference workspace, no ``WorkspaceSucceeded``, and a
v1alpha1 object may have no ``status.state`` at all. Nothing converts stored objects (the CRD has
no conversion webhook, as in Kaito): the next reconcile pass rebuilds the status from what it
observes, so an old Ready workspace gains WorkspaceSucceeded=True and state Ready without a restart
of its serving (no Machine or RayService is recreated).
"""

from __future__ import annotations

import copy

from test_workspace_reconciler import WORKSPACE

from controller.api.kinds import MACHINES, RAYSERVICES, WORKSPACES
from controller.api.workspace import LABEL_WORKSPACE, Workspace
from controller.runtime import Request, Store
from controller.runtime.fake import FakeClient
from controller.workspace import names
from controller.workspace.machines import build_machine
from controller.workspace.reconciler import Options, Stores, WorkspaceReconciler

READY = {"type": "Ready", "status": "True", "reason": "Ready", "message": "",
         "lastTransitionTime": "2026-01-01T00:01:00Z"}
OLD_STATUS = {  # what the seed stored: no state, no WorkspaceSucceeded
    "conditions": [
        {"type": t, "status": "True", "reason": r, "message": "",
         "lastTransitionTime": "2026-01-01T00:02:00Z", "observedGeneration": 1}
        for t, r in (("ResourceReady", "MachinesReady"), ("InferenceReady", "InferenceReady"),
                     ("WorkspaceReady", "WorkspaceReady"))
    ],
    "targetNodeCount": 2,
    "workerNodes": ["n0", "n1"],
}


def _running_rayservice(ws: Workspace) -> dict:
    return {
        "apiVersion": "ray.io/v1", "kind": "RayService",
        "metadata": {"name": names.rayservice_name(ws.name), "namespace": ws.namespace, "generation": 1},
        "spec": {"rayClusterConfig": {"headGroupSpec": {"template": {}}}},
        "status": {"observedGeneration": 1,
                   "conditions": [{**READY, "reason": "NonZeroServeEndpoints"}],
                   "activeServiceStatus": {"applicationStatuses": {"llm": {"status": "RUNNING"}}}},
    }


def test_a_ready_workspace_of_the_previous_version_gains_workspace_succeeded_and_state() -> None:
    for api_version in ("kaito.sh/v1alpha1", "kaito.sh/v1beta1"):
        old = {**copy.deepcopy(WORKSPACE), "apiVersion": api_version, "status": copy.deepcopy(OLD_STATUS)}
        ws = Workspace.model_validate(old)  # the old shape parses
        assert ws.status.state is None and ws.condition("WorkspaceSucceeded") is None
        client = FakeClient()
        client.add(WORKSPACES, copy.deepcopy(old))
        stores = Stores(Store(), Store(), Store(), Store(), Store())
        stores.machines.add_label_index(LABEL_WORKSPACE)
        stores.workspaces.add(copy.deepcopy(old))
        for i in range(2):
            machine = build_machine(ws, i, "Standard_NC12s_v3", None)
            machine["status"] = {"nodeName": f"n{i}", "conditions": [READY]}
            stores.machines.add(machine)
        rs = _running_rayservice(ws)
        stores.rayservices.add(rs)
        client.add(RAYSERVICES, copy.deepcopy(rs))
        rec = WorkspaceReconciler(client, stores, options=Options(),
                                  serve_config=lambda ws, plan: "applications: []\n")
        rec.reconcile(Request("ns", "phi"))
        healed = Workspace.model_validate(client.objects[("workspaces", "ns", "phi")])
        assert healed.status.state == "Ready"
        for type_ in ("ResourceReady", "InferenceReady", "WorkspaceReady", "WorkspaceSucceeded"):
            assert healed.is_condition_true(type_), type_
        assert healed.condition("WorkspaceSucceeded").reason == "WorkspaceSucceeded"
        # the conditions that did not change keep their transition time: nothing flapped
        assert str(healed.condition("WorkspaceReady").last_transition_time).startswith("2026-01-01 00:02")
        assert not [c for c in client.calls if c[0] == "create" and c[1] == MACHINES.plural]
