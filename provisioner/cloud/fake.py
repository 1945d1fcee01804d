"""A kwok-style fake cloud: "VMs" are ConfigMaps, "booting" creates a real Node through the API server.

Why: the local demo and the integration tests need the whole Machine lifecycle (launch, a Node
that registers late, becomes Ready, gets its GPUs and loses its startup taints) against a real
API server that has no kubelet, no cloud and no controller-manager. This module plays all three:

- the cloud's inventory is one ConfigMap per instance in ``namespace`` (labelled
  ``fake.kaito.sh/instance``), so the truth lives in the API server, not in this process: a
  restarted provisioner finds every instance again and resumes booting the ones it had started;
- ``tick()`` is the kubelet + node lifecycle controller + device plugin + startup-taint daemonset:
  after ``boot_delay`` it creates the Node (NotReady, ``node.kubernetes.io/not-ready`` taint,
  ``nvidia.com/gpu`` allocatable 0 as kubelet reports before the device plugin registers), after
  ``ready_delay`` more marks it Ready with its GPUs allocatable, and once the Machine controller has
  registered the Node it clears the startup taints; a Node whose instance is gone is deleted, as a
  cloud-controller-manager would;
- failures can be injected per SKU (quota, capacity, unavailable) and a boot can be made to never
  finish, for tests of the error paths and the registration timeout.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controller.api.machine import (
    LABEL_ARCH,
    LABEL_CAPACITY_TYPE,
    LABEL_HOSTNAME,
    LABEL_INSTANCE_TYPE,
    LABEL_OS,
    LABEL_REGISTERED,
    LABEL_ZONE,
    TAINT_NOT_READY,
)
from controller.runtime.client import AlreadyExists, ApiError, Client, Conflict
from controller.runtime.client import NotFound as ApiNotFound
from controller.runtime.kinds import CONFIGMAPS, NAMESPACES, NODES
from provisioner.cloud.base import (
    GPU_RESOURCE,
    TAG_MANAGED_BY,
    CloudError,
    CloudProvider,
    InProgress,
    Instance,
    InstanceState,
    InstanceType,
    InsufficientCapacity,
    LaunchRequest,
    NotFound,
    QuotaExceeded,
    SKUUnavailable,
    Taint,
    ownership_tags,
)
from provisioner.cloud.catalog import load_instance_types

log = logging.getLogger(__name__)

PROVIDER_ID_PREFIX = "fake://"
LABEL_INSTANCE = "fake.kaito.sh/instance"
LABEL_NODE = "fake.kaito.sh/cloud"  # value: the inventory namespace, so two fake clouds never mix
DATA_KEY = "instance.json"
DEFAULT_NAMESPACE = "kube-system"

FAILURES: dict[str, type[CloudError]] = {
    "quota": QuotaExceeded,
    "capacity": InsufficientCapacity,
    "sku": SKUUnavailable,
}
_MESSAGES = {
    "quota": "Operation could not be completed as it results in exceeding approved {sku} Cores quota "
    "(fake cloud). Submit a request for quota increase.",
    "capacity": "Allocation failed: the fake cloud has no capacity for {sku} right now. Try again later.",
    "sku": "The requested VM size {sku} is currently not available in location fake-region.",
}


@dataclass
class _Failure:
    kind: str
    message: str
    remaining: int | None  # None: until cleared


def instance_name(machine_name: str, machine_uid: str) -> str:
    """``fake-<machine>-<6 hex of the uid>``: a valid Node/ConfigMap name, unique per Machine incarnation."""
    base = machine_name[:200].rstrip(".-")
    return f"fake-{base}-{hashlib.sha256(machine_uid.encode()).hexdigest()[:6]}"


class FakeCloud(CloudProvider):
    """The fake provider; ``run(stop)`` must run somewhere (a manager runnable) for Nodes to appear."""

    def __init__(
        self,
        client: Client,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        instance_types: list[InstanceType] | None = None,
        boot_delay: float = 5.0,
        ready_delay: float = 1.0,
        tick_interval: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self.namespace = namespace
        self._types = {
            t.name: t for t in (instance_types if instance_types is not None else load_instance_types())
        }
        self.boot_delay = boot_delay
        self.ready_delay = ready_delay
        self.tick_interval = tick_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str | None, _Failure] = {}
        self._boot_delays: dict[str, float] = {}

    # --- knobs for tests and the demo --------------------------------------------------------
    def fail(self, kind: str, sku: str | None = None, times: int | None = None, message: str = "") -> None:
        """Make ``create`` fail with ``kind`` (quota|capacity|sku) for ``sku`` (None: every SKU)."""
        if kind not in FAILURES:
            raise ValueError(f"unknown failure kind {kind!r}; one of {sorted(FAILURES)}")
        with self._lock:
            self._failures[sku] = _Failure(kind, message, times)

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def set_boot_delay(self, seconds: float, sku: str | None = None) -> None:
        """Boot delay for new instances of ``sku`` (None: the default); ``float('inf')`` never boots."""
        with self._lock:
            if sku is None:
                self.boot_delay = seconds
            else:
                self._boot_delays[sku] = seconds

    def _injected_failure(self, sku: str) -> CloudError | None:
        with self._lock:
            key = sku if sku in self._failures else (None if None in self._failures else "")
            if key == "":
                return None
            failure = self._failures[key]
            if failure.remaining is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    del self._failures[key]
        message = failure.message or _MESSAGES[failure.kind].format(sku=sku)
        return FAILURES[failure.kind](message)

    # --- CloudProvider -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return "fake"

    def instance_types(self) -> list[InstanceType]:
        return list(self._types.values())

    def instance_id_for(self, machine_name: str, machine_uid: str) -> str:
        return instance_name(machine_name, machine_uid)

    def create(self, req: LaunchRequest) -> Instance:
        with _as_cloud_errors("create"):
            return self._create(req)

    def _create(self, req: LaunchRequest) -> Instance:
        iid = self.instance_id_for(req.machine_name, req.machine_uid)
        existing = self._get_record(iid)
        if existing is not None:
            return self._checked_existing(existing)
        sku = self._types.get(req.instance_type)
        if sku is None:
            raise SKUUnavailable(f"instance type {req.instance_type!r} is not offered by the fake cloud")
        failure = self._injected_failure(sku.name)
        if failure is not None:
            raise failure
        now = self._clock()
        with self._lock:
            delay = self._boot_delays.get(sku.name, self.boot_delay)
        record = {
            "id": iid,
            "instanceType": sku.name,
            "state": InstanceState.CREATING.value,
            "createdAt": now,
            "bootAt": None if delay == float("inf") else now + delay,
            "readyAt": None,
            "tags": ownership_tags(req, datetime.fromtimestamp(now, UTC)),
            "labels": {**req.labels, **self._sku_labels(sku, iid)},
            "taints": [t.model_dump() for t in req.taints],
            "startupTaints": [t.model_dump() for t in req.startup_taints],
            "capacity": sku.capacity(),
        }
        cm = {
            "metadata": {"name": iid, "namespace": self.namespace, "labels": {LABEL_INSTANCE: "true"}},
            "data": {DATA_KEY: json.dumps(record, sort_keys=True)},
        }
        try:
            try:
                self._client.create(CONFIGMAPS, cm, namespace=self.namespace)
            except ApiNotFound:  # first instance ever: the inventory namespace does not exist yet
                with contextlib.suppress(AlreadyExists):
                    self._client.create(NAMESPACES, {"metadata": {"name": self.namespace}})
                self._client.create(CONFIGMAPS, cm, namespace=self.namespace)
        except AlreadyExists:
            again = self._get_record(iid)
            if again is None:
                raise InProgress(f"instance {iid} is being replaced; retry") from None
            return self._checked_existing(again)
        log.info("fake cloud: launched %s (%s) for machine %s", iid, sku.name, req.machine_name)
        return self._to_instance(record)

    def delete(self, instance_id: str) -> None:
        with _as_cloud_errors("delete"):
            self._delete(instance_id)

    def _delete(self, instance_id: str) -> None:
        record = self._get_record(instance_id)
        node_gone = not self._client.delete(NODES, instance_id)
        if record is None:
            raise NotFound(f"fake instance {instance_id} not found")
        if not node_gone:
            log.info("fake cloud: deleted node %s of instance %s", instance_id, instance_id)
        self._client.delete(CONFIGMAPS, instance_id, namespace=self.namespace)
        log.info("fake cloud: terminated %s", instance_id)

    def get(self, instance_id: str) -> Instance:
        with _as_cloud_errors("get"):
            record = self._get_record(instance_id)
        if record is None:
            raise NotFound(f"fake instance {instance_id} not found")
        return self._to_instance(record)

    def list(self) -> list[Instance]:
        with _as_cloud_errors("list"):
            records = self._list_records()
        return [self._to_instance(r) for r in records if r["tags"].get(TAG_MANAGED_BY)]

    # --- the fake data plane -----------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set; errors are logged and retried on the next tick."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("fake cloud tick failed")
            stop.wait(self.tick_interval)

    def tick(self) -> None:
        """One pass: boot due instances, make booted nodes Ready, clear startup taints, drop stray nodes."""
        now = self._clock()
        records = {r["id"]: r for r in self._list_records()}
        nodes, _ = self._client.list(NODES, label_selector=f"{LABEL_NODE}={self.namespace}")
        by_name = {n["metadata"]["name"]: n for n in nodes}
        for iid, record in records.items():
            node = by_name.get(iid)
            try:
                if record["state"] == InstanceState.CREATING.value:
                    if record["bootAt"] is not None and now >= record["bootAt"]:
                        self._boot(record, now)
                elif node is not None:
                    self._advance(record, node, now)
            except Conflict:
                pass  # the controller wrote the Node meanwhile; next tick sees its new version
            except ApiError as exc:  # one bad instance must not stall the others
                log.warning("fake cloud: instance %s: %s", iid, exc)
        for name, node in by_name.items():
            if name not in records and not node["metadata"].get("deletionTimestamp"):
                log.info("fake cloud: node %s has no instance any more; deleting it", name)
                self._client.delete(NODES, name)

    def _boot(self, record: dict, now: float) -> None:
        """The kubelet registers: a NotReady Node with the instance's labels and taints, no GPUs yet."""
        iid = record["id"]
        capacity = dict(record["capacity"])
        allocatable = {**capacity, GPU_RESOURCE: "0"} if GPU_RESOURCE in capacity else dict(capacity)
        taints = [
            *record["taints"],
            *record["startupTaints"],
            {"key": TAINT_NOT_READY, "effect": "NoSchedule"},
        ]
        node = {
            "metadata": {
                "name": iid,
                "labels": {**record["labels"], LABEL_NODE: self.namespace},
            },
            "spec": {"providerID": PROVIDER_ID_PREFIX + iid, "taints": [_k8s_taint(t) for t in taints]},
            "status": {
                "capacity": capacity,
                "allocatable": allocatable,
                "conditions": [_ready_condition("False", "KubeletNotReady", "container runtime is starting")],
                "nodeInfo": {
                    "kubeletVersion": "v1.37.0-fake",
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                },
            },
        }
        with contextlib.suppress(AlreadyExists):
            self._client.create(NODES, node)
        if self._get_record(iid) is None:  # deleted while we booted it: do not leak the Node
            self._client.delete(NODES, iid)
            return
        record.update(state=InstanceState.RUNNING.value, readyAt=now + self.ready_delay)
        self._put_record(record)
        log.info("fake cloud: node %s registered (not ready yet)", iid)

    def _advance(self, record: dict, node: dict, now: float) -> None:
        """Ready + GPUs once ``readyAt`` passed; startup taints off once the controller registered it."""
        name = node["metadata"]["name"]
        ready = _is_ready(node)
        if not ready and record.get("readyAt") is not None and now >= record["readyAt"]:
            status = node.get("status") or {}
            node = self._client.patch(
                NODES,
                name,
                {
                    "status": {
                        "allocatable": {**(status.get("allocatable") or {}), **record["capacity"]},
                        "conditions": [
                            _ready_condition("True", "KubeletReady", "kubelet is posting ready status")
                        ],
                    }
                },
                subresource="status",
            )
            self._remove_taints(node, {TAINT_NOT_READY})
            log.info("fake cloud: node %s is Ready", name)
            return
        registered = (node["metadata"].get("labels") or {}).get(LABEL_REGISTERED) == "true"
        startup_keys = {t["key"] for t in record["startupTaints"]}
        if ready and registered and startup_keys:
            self._remove_taints(node, startup_keys)

    def _remove_taints(self, node: dict, keys: set[str]) -> None:
        taints = (node.get("spec") or {}).get("taints") or []
        kept = [t for t in taints if t.get("key") not in keys]
        if len(kept) == len(taints):
            return
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": node["metadata"]["resourceVersion"]},
            {"op": "replace", "path": "/spec/taints", "value": kept},
        ]
        self._client.patch(NODES, node["metadata"]["name"], patch, patch_type="json")

    # --- the inventory -----------------------------------------------------------------------
    def _get_record(self, iid: str) -> dict | None:
        try:
            cm = self._client.get(CONFIGMAPS, iid, namespace=self.namespace)
        except ApiNotFound:
            return None
        return _record_of(cm)

    def _list_records(self) -> list[dict]:
        cms, _ = self._client.list(
            CONFIGMAPS, namespace=self.namespace, label_selector=f"{LABEL_INSTANCE}=true"
        )
        return [r for r in (_record_of(cm) for cm in cms) if r is not None]

    def _put_record(self, record: dict) -> None:
        # Deleted meanwhile: nothing to record; the next tick drops a Node it booted for it.
        with contextlib.suppress(ApiNotFound):
            self._client.patch(
                CONFIGMAPS,
                record["id"],
                {"data": {DATA_KEY: json.dumps(record, sort_keys=True)}},
                namespace=self.namespace,
            )

    def _checked_existing(self, record: dict) -> Instance:
        instance = self._to_instance(record)
        if instance.state == InstanceState.DELETING:
            raise InProgress(f"instance {instance.id} is still being deleted; retry")
        return instance

    def _to_instance(self, record: dict) -> Instance:
        return Instance(
            id=record["id"],
            provider_id=PROVIDER_ID_PREFIX + record["id"],
            instance_type=record["instanceType"],
            state=InstanceState(record["state"]),
            capacity=record["capacity"],
            labels=record["labels"],
            tags=record["tags"],
            created_at=datetime.fromtimestamp(record["createdAt"], UTC),
        )

    @staticmethod
    def _sku_labels(sku: InstanceType, iid: str) -> dict[str, str]:
        labels = {
            LABEL_INSTANCE_TYPE: sku.name,
            LABEL_ARCH: sku.architecture,
            LABEL_OS: "linux",
            LABEL_HOSTNAME: iid[:63].rstrip(".-"),
            LABEL_CAPACITY_TYPE: "on-demand",
        }
        if sku.zones:
            labels[LABEL_ZONE] = sku.zones[0]
        return labels


@contextlib.contextmanager
def _as_cloud_errors(verb: str) -> Iterator[None]:
    """The fake cloud's "cloud API" is the API server: its failures are provider errors."""
    try:
        yield
    except ApiError as exc:
        raise CloudError(f"fake cloud: {verb} failed: {exc}") from exc


def _record_of(cm: dict) -> dict | None:
    raw = (cm.get("data") or {}).get(DATA_KEY)
    if not raw:
        return None
    try:
        record: dict[str, Any] = json.loads(raw)
    except ValueError:
        log.warning("fake cloud: unreadable instance record %s", cm["metadata"]["name"])
        return None
    return record


def _k8s_taint(t: dict) -> dict:
    return Taint.model_validate(t).to_k8s()


def _ready_condition(status: str, reason: str, message: str) -> dict:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }


def _is_ready(node: dict) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False
