"""The orphan sweep: node objects (NodeClaims or Machines) whose Workspace is gone are deleted.

Why: node objects are cluster-scoped and carry no ownerReference (a namespaced Workspace cannot
own them), so garbage collection never removes them; the Workspace's finalizer does. When the
finalizer never runs (the usual "patch finalizers to null" on a stuck Terminating object, a
namespace force-deleted, a restore from backup without Workspaces), the node objects stay, and
so do their GPU VMs, billed until someone notices. Every ``interval`` the leader looks for node
objects whose owner labels name a Workspace that is not in the cache, waits out ``grace`` (a
Workspace the cache has not shown yet, or one created a moment ago), confirms with an
authoritative GET that the Workspace really is gone, then deletes the node object: the
provisioner's finalizer on it releases the VM.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from controller.api.kinds import WORKSPACES
from controller.api.nodeapi import NodeAPI
from controller.api.workspace import LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE
from controller.runtime import Client, EventRecorder, NotFound, Store

log = logging.getLogger(__name__)

REASON_ORPHAN_DELETED = "OrphanDeleted"


def _created(obj: dict) -> float | None:
    stamp = (obj.get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class OrphanSweeper:
    """``run(stop)`` is a Manager runnable (leader only); ``sweep_once()`` is one look."""

    def __init__(
        self,
        client: Client,
        node_api: NodeAPI,
        nodes: Store,
        workspaces: Store,
        recorder: EventRecorder | None = None,
        grace: float = 300.0,
        interval: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.node_api = node_api
        self.nodes = nodes
        self.workspaces = workspaces
        self.recorder = recorder
        self.grace = grace
        self.interval = interval
        self.clock = clock

    def _orphan_owner(self, obj: dict) -> tuple[str, str] | None:
        """(namespace, name) of the Workspace an orphan names, or None if it is not (yet) one."""
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        name, namespace = labels.get(LABEL_WORKSPACE), labels.get(LABEL_WORKSPACE_NAMESPACE)
        if not name or not namespace or meta.get("deletionTimestamp"):
            return None  # not ours, or already going
        if self.workspaces.get(f"{namespace}/{name}") is not None:
            return None
        created = _created(obj)
        if created is None or self.clock() - created < self.grace:
            return None
        return namespace, name

    def sweep_once(self) -> list[str]:
        """Delete the orphans seen now; return their names."""
        deleted = []
        for obj in self.nodes.list():
            owner = self._orphan_owner(obj)
            if owner is None:
                continue
            namespace, name = owner
            try:  # the cache may lag behind a Workspace just created: ask the API server
                self.client.get(WORKSPACES, name, namespace)
                continue
            except NotFound:
                pass
            node_name = obj["metadata"]["name"]
            try:
                self.client.delete(self.node_api.kind, node_name)
            except NotFound:
                continue
            deleted.append(node_name)
            message = (f"deleted {self.node_api.kind.kind} {node_name}: its Workspace {namespace}/{name} "
                       f"no longer exists (its finalizer never ran), so nothing else would release the node")
            log.warning("%s", message)
            if self.recorder is not None:
                self.recorder.event(obj, "Warning", REASON_ORPHAN_DELETED, message)
        return deleted

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                self.sweep_once()
            except Exception:  # one failed look (an API server hiccup) must not end the sweep
                log.exception("orphan sweep failed; trying again in %.0fs", self.interval)
