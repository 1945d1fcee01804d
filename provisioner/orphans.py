"""The orphan sweep: cloud instances tagged as ours that no Machine accounts for are deleted.

Why: every other path deletes instances through a Machine's finalizer, but instances still leak
when the Machine disappears in ways a finalizer cannot see (someone strips the finalizer, the CRD
is reinstalled, a create raced a delete: gpu-provisioner PRs #24, #178, #181). The grace period
keeps the sweep away from instances whose Machine the cache has not shown us yet. Runs only on the
leader, like everything else that acts on the cloud.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from controller.runtime import Store
from provisioner import metrics
from provisioner.cloud import base as cloud
from provisioner.cloud.base import CloudProvider, InstanceState

log = logging.getLogger(__name__)


class OrphanSweeper:
    def __init__(
        self,
        provider: CloudProvider,
        machines: Store,
        grace_period: float = 300.0,
        interval: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.provider = provider
        self.machines = machines
        self.grace_period = grace_period
        self.interval = interval
        self._clock = clock

    def is_orphan(self, instance: cloud.Instance) -> bool:
        """No Machine of that name, or one of that name but another uid (an earlier incarnation)."""
        machine = self.machines.get(instance.machine_name) if instance.machine_name else None
        if machine is None:
            return True
        uid = machine["metadata"].get("uid")
        return bool(instance.machine_uid) and uid != instance.machine_uid

    def sweep(self) -> list[str]:
        """One pass; returns the ids of the instances it started deleting."""
        now = self._clock()
        deleted = []
        for instance in self.provider.list():
            if instance.state == InstanceState.DELETING or not self.is_orphan(instance):
                continue
            if instance.created_at is None or now - instance.created_at.timestamp() < self.grace_period:
                continue
            log.warning(
                "orphan sweep: %s instance %s (machine %r) has no Machine; deleting it",
                self.provider.name,
                instance.id,
                instance.machine_name,
            )
            try:
                self.provider.delete(instance.id)
            except cloud.NotFound:
                continue
            except cloud.CloudError as exc:
                metrics.PROVIDER_ERRORS.labels(self.provider.name, "delete", exc.reason).inc()
                log.warning("orphan sweep: deleting %s failed: %s", instance.id, exc)
                continue
            metrics.ORPHANS_DELETED.labels(self.provider.name).inc()
            deleted.append(instance.id)
        return deleted

    def run(self, stop: threading.Event) -> None:
        """Sweep every ``interval`` seconds until ``stop`` is set (a Manager runnable)."""
        while not stop.wait(self.interval):
            try:
                self.sweep()
            except cloud.CloudError as exc:
                metrics.PROVIDER_ERRORS.labels(self.provider.name, "list", exc.reason).inc()
                log.warning("orphan sweep: listing instances failed: %s", exc)
            except Exception:
                log.exception("orphan sweep failed")
