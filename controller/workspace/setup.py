"""Wiring the Workspace reconciler into a Manager: which caches it reads, which events wake it, and
the workspace gauges read from its cache at scrape time."""

from __future__ import annotations

from collections.abc import Iterable

from controller.api.kinds import RAYSERVICES, WORKSPACES
from controller.api.nodeapi import MACHINE_API, NodeAPI
from controller.api.workspace import GROUP, LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE
from controller.runtime import Controller, Manager, Request
from controller.runtime.kinds import NETWORKPOLICIES
from controller.workspace import metrics
from controller.workspace.orphans import OrphanSweeper
from controller.workspace.reconciler import JOBS, SERVICES, Options, Stores, WorkspaceReconciler

CONTROLLER_NAME = "workspace"


def machine_to_workspace(machine: dict) -> Iterable[Request]:
    """A Machine event wakes the workspace its owner labels name (Machines have no ownerReference)."""
    labels = (machine.get("metadata") or {}).get("labels") or {}
    name, namespace = labels.get(LABEL_WORKSPACE), labels.get(LABEL_WORKSPACE_NAMESPACE)
    return [Request(namespace, name)] if name and namespace else []


def setup_workspace_controller(mgr: Manager, workers: int = 2, options: Options | None = None,
                               node_api: NodeAPI = MACHINE_API, network_policies: bool = True, **overrides
                               ) -> tuple[Controller, WorkspaceReconciler]:
    """Register the workspace controller with ``mgr``; it creates ``node_api``'s objects (Machines or
    NodeClaims) and watches them.

    ``network_policies``: a NetworkPolicy per inference workspace (``netpol.py``).
    ``overrides`` replace the reconciler's planner / validator / serve_config (tests, experiments).
    """
    ws_inf = mgr.informer(WORKSPACES)
    machine_inf = mgr.informer(node_api.kind)
    rs_inf = mgr.informer(RAYSERVICES)
    svc_inf = mgr.informer(SERVICES)
    job_inf = mgr.informer(JOBS)
    netpol_inf = mgr.informer(NETWORKPOLICIES) if network_policies else None
    machine_inf.store.add_label_index(LABEL_WORKSPACE)
    stores = Stores(ws_inf.store, machine_inf.store, rs_inf.store, svc_inf.store, job_inf.store,
                    netpol_inf.store if netpol_inf else None)
    metrics.register_collector(ws_inf.store.list)
    reconciler = WorkspaceReconciler(mgr.client, stores, mgr.event_recorder("kaito-controller"), options,
                                     node_api=node_api, **overrides)
    ctrl = Controller(CONTROLLER_NAME, reconciler, workers=workers)
    ctrl.watch(ws_inf)
    ctrl.watch_mapped(machine_inf, machine_to_workspace)
    for inf in (rs_inf, svc_inf, job_inf, *([netpol_inf] if netpol_inf else [])):
        ctrl.watch_owned(inf, owner_kind="Workspace", owner_group=GROUP)
    mgr.add_controller(ctrl)
    opts = reconciler.options
    if opts.orphan_interval_seconds > 0:
        sweeper = OrphanSweeper(mgr.client, node_api, machine_inf.store, ws_inf.store, reconciler.recorder,
                                grace=opts.orphan_grace_seconds, interval=opts.orphan_interval_seconds)
        mgr.add_runnable(sweeper.run, needs_leader=True)  # deletes: the leader only
    return ctrl, reconciler
