"""Wiring the Workspace reconciler into a Manager: which caches it reads, which events wake it, and
the workspace gauges read from its cache at scrape time."""

from __future__ import annotations

from collections.abc import Iterable

from controller.api.kinds import RAYSERVICES, WORKSPACES
from controller.api.nodeapi import MACHINE_API, NodeAPI
from controller.api.workspace import GROUP, LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE
from controller.runtime import Controller, Manager, Request, Store
from controller.runtime.kinds import NETWORKPOLICIES, NODES, PODS
from controller.workspace import byo, metrics
from controller.workspace.orphans import OrphanSweeper
from controller.workspace.reconciler import (
    JOBS,
    RAY_POD_SELECTOR,
    SERVICES,
    Options,
    Stores,
    WorkspaceReconciler,
)

CONTROLLER_NAME = "workspace"


def machine_to_workspace(machine: dict) -> Iterable[Request]:
    """A Machine event wakes the workspace its owner labels name (Machines have no ownerReference)."""
    labels = (machine.get("metadata") or {}).get("labels") or {}
    name, namespace = labels.get(LABEL_WORKSPACE), labels.get(LABEL_WORKSPACE_NAMESPACE)
    return [Request(namespace, name)] if name and namespace else []


def pod_to_workspace(pod: dict) -> Iterable[Request]:
    """A Ray pod's event wakes the workspace its template label names (in the pod's namespace)."""
    meta = pod.get("metadata") or {}
    name, namespace = (meta.get("labels") or {}).get(LABEL_WORKSPACE), meta.get("namespace")
    return [Request(namespace, name)] if name and namespace else []


def node_to_workspaces(node: dict, workspaces: Iterable[dict]) -> Iterable[Request]:
    """A Node event wakes the workspaces that may use it: those naming it in preferredNodes or
    whose labelSelector's matchLabels it carries (BYO mode); our own nodes wake theirs through
    their Machines."""
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    out = []
    for ws in workspaces:
        resource, wmeta = ws.get("resource") or {}, ws.get("metadata") or {}
        match = (resource.get("labelSelector") or {}).get("matchLabels") or {}
        named = meta.get("name") in (resource.get("preferredNodes") or [])
        if named or (match and all(labels.get(k) == v for k, v in match.items())):
            out.append(Request(wmeta.get("namespace"), wmeta.get("name")))
    return out


def setup_workspace_controller(mgr: Manager, workers: int = 2, options: Options | None = None,
                               node_api: NodeAPI = MACHINE_API, network_policies: bool = True, **overrides
                               ) -> tuple[Controller, WorkspaceReconciler]:
    """Register the workspace controller with ``mgr``; it creates ``node_api``'s objects (Machines or
    NodeClaims) and watches them.

    ``network_policies``: a NetworkPolicy per inference workspace (``netpol.py``).
    ``overrides`` replace the reconciler's planner / validator / serve_config (tests, experiments).
    """
    ws_inf = mgr.informer(WORKSPACES)
    provisions = (options or Options()).node_provisioner != byo.BYO
    machine_inf = mgr.informer(node_api.kind) if provisions else None  # BYO: no node objects at all
    node_inf = mgr.informer(NODES)  # existing nodes: resource.preferredNodes, BYO mode
    rs_inf = mgr.informer(RAYSERVICES)
    svc_inf = mgr.informer(SERVICES)
    job_inf = mgr.informer(JOBS)
    # the Ray pods of Workspaces only (KubeRay's node-type label, our template label), so the
    # controller caches no other Pod of the cluster: it reads them to say why inference is not up
    pod_inf = mgr.informer(PODS, label_selector=RAY_POD_SELECTOR)
    netpol_inf = mgr.informer(NETWORKPOLICIES) if network_policies else None
    machine_store = machine_inf.store if machine_inf is not None else Store()
    machine_store.add_label_index(LABEL_WORKSPACE)
    stores = Stores(ws_inf.store, machine_store, rs_inf.store, svc_inf.store, job_inf.store,
                    pod_inf.store, node_inf.store, netpol_inf.store if netpol_inf else None)
    metrics.register_collector(ws_inf.store.list)
    reconciler = WorkspaceReconciler(mgr.client, stores, mgr.event_recorder("kaito-controller"), options,
                                     node_api=node_api, **overrides)
    ctrl = Controller(CONTROLLER_NAME, reconciler, workers=workers)
    ctrl.watch(ws_inf)
    if machine_inf is not None:
        ctrl.watch_mapped(machine_inf, machine_to_workspace)
    ctrl.watch_mapped(node_inf, lambda node: node_to_workspaces(node, ws_inf.store.list()))
    ctrl.watch_mapped(pod_inf, pod_to_workspace)
    for inf in (rs_inf, svc_inf, job_inf, *([netpol_inf] if netpol_inf else [])):
        ctrl.watch_owned(inf, owner_kind="Workspace", owner_group=GROUP)
    mgr.add_controller(ctrl)
    opts = reconciler.options
    if opts.orphan_interval_seconds > 0 and machine_inf is not None:  # BYO: no node objects of ours
        sweeper = OrphanSweeper(mgr.client, node_api, machine_inf.store, ws_inf.store, reconciler.recorder,
                                grace=opts.orphan_grace_seconds, interval=opts.orphan_interval_seconds)
        mgr.add_runnable(sweeper.run, needs_leader=True)  # deletes: the leader only
    return ctrl, reconciler
