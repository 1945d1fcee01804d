"""Wiring the Machine reconciler into a Manager: which caches it reads, which events wake it."""

from __future__ import annotations

from collections.abc import Callable

from controller.api.nodeapi import MACHINE_API, NodeAPI
from controller.runtime import Controller, Manager, Request, Store
from controller.runtime.kinds import NODES
from provisioner.cloud.base import CloudProvider
from provisioner.indexes import MACHINE_PROVIDER_ID_INDEX, install_indexes, node_provider_id
from provisioner.machine_controller import MachineReconciler, Options

CONTROLLER_NAME = "machine"
EVENT_SOURCE = "kaito-provisioner"


def node_to_machines(machines: Store, api: NodeAPI = MACHINE_API) -> Callable[[dict], list[Request]]:
    """A Node event concerns the Machine named on its label, or whose providerID it carries."""

    def requests(node: dict) -> list[Request]:
        names = set()
        label = ((node.get("metadata") or {}).get("labels") or {}).get(api.model.LABEL_NODE_OF)
        if label:
            names.add(label)
        for pid in node_provider_id(node):
            names.update(m["metadata"]["name"] for m in machines.by_index(MACHINE_PROVIDER_ID_INDEX, pid))
        return [Request(None, name) for name in sorted(names)]

    return requests


def setup_machine_controller(
    mgr: Manager, provider: CloudProvider, options: Options | None = None, api: NodeAPI = MACHINE_API
) -> MachineReconciler:
    """Register the controller of ``api``'s objects (Machines or NodeClaims) with ``mgr``: shared
    informers of them and of Nodes, indexes."""
    options = options or Options()
    machines = mgr.informer(api.kind)
    nodes = mgr.informer(NODES)
    install_indexes(machines.store, nodes.store, api.model.LABEL_NODE_OF)
    reconciler = MachineReconciler(
        mgr.client, provider, machines.store, nodes.store, mgr.event_recorder(EVENT_SOURCE), options, api=api
    )
    ctrl = Controller(CONTROLLER_NAME, reconciler, workers=options.workers)
    ctrl.watch(machines)
    ctrl.watch_mapped(nodes, node_to_machines(machines.store, api))
    mgr.add_controller(ctrl)
    return reconciler
