"""Wiring the Machine reconciler into a Manager: which caches it reads, which events wake it."""

from __future__ import annotations

from collections.abc import Callable

from controller.api.kinds import MACHINES
from controller.api.machine import LABEL_MACHINE_NAME
from controller.runtime import Controller, Manager, Request, Store
from controller.runtime.kinds import NODES
from provisioner.cloud.base import CloudProvider
from provisioner.indexes import MACHINE_PROVIDER_ID_INDEX, install_indexes, node_provider_id
from provisioner.machine_controller import MachineReconciler, Options

CONTROLLER_NAME = "machine"
EVENT_SOURCE = "kaito-provisioner"


def node_to_machines(machines: Store) -> Callable[[dict], list[Request]]:
    """A Node event concerns the Machine named on its label, or whose providerID it carries."""

    def requests(node: dict) -> list[Request]:
        names = set()
        label = ((node.get("metadata") or {}).get("labels") or {}).get(LABEL_MACHINE_NAME)
        if label:
            names.add(label)
        for pid in node_provider_id(node):
            names.update(m["metadata"]["name"] for m in machines.by_index(MACHINE_PROVIDER_ID_INDEX, pid))
        return [Request(None, name) for name in sorted(names)]

    return requests


def setup_machine_controller(
    mgr: Manager, provider: CloudProvider, options: Options | None = None
) -> MachineReconciler:
    """Register the Machine controller with ``mgr``: shared Machine and Node informers, indexes."""
    options = options or Options()
    machines = mgr.informer(MACHINES)
    nodes = mgr.informer(NODES)
    install_indexes(machines.store, nodes.store)
    reconciler = MachineReconciler(
        mgr.client, provider, machines.store, nodes.store, mgr.event_recorder(EVENT_SOURCE), options
    )
    ctrl = Controller(CONTROLLER_NAME, reconciler, workers=options.workers)
    ctrl.watch(machines)
    ctrl.watch_mapped(nodes, node_to_machines(machines.store))
    mgr.add_controller(ctrl)
    return reconciler
