"""The Machine reconciler: karpenter.sh/v1alpha5 Machines become cloud instances and Nodes.

Each reconcile reads the Machine and Nodes from the informer caches, takes at most one step per
stage and returns; nothing waits inside a worker (the cloud's long operations are polled with
``requeue_after``). Order of stages, as Karpenter's lifecycle controller:

1. finalizer ``karpenter.sh/termination`` first: an instance is only ever launched for a Machine
   that cannot disappear without us noticing, or it could leak;
2. launch: ``provider.create`` (idempotent by contract), record providerID and capacity in
   MachineLaunched; a failure (quota, capacity, SKU) goes into that condition's reason and message
   and is retried with exponential backoff, so the Workspace can show it meanwhile;
3. registration: the Node whose ``spec.providerID`` matches is adopted (finalizer, Machine labels,
   taints and startup taints, ``karpenter.sh/machine-name``), MachineRegistered; a Machine whose
   Node has not registered within the registration TTL after launch is deleted, with the reason
   recorded in an Event and the condition;
4. initialization: Node Ready, startup and boot taints gone, requested resources such as
   ``nvidia.com/gpu`` allocatable -> MachineInitialized; Ready rolls the three up;
5. deletion: delete the Node(s), then ``provider.delete`` until the instance is gone, then drop
   the finalizer.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import Histogram
from pydantic import ValidationError

from controller.api.kinds import MACHINES
from controller.api.machine import (
    CONDITION_INITIALIZED,
    CONDITION_LAUNCHED,
    CONDITION_REGISTERED,
    FINALIZER_TERMINATION,
    LABEL_ARCH,
    LABEL_CAPACITY_TYPE,
    LABEL_INITIALIZED,
    LABEL_INSTANCE_TYPE,
    LABEL_MACHINE_NAME,
    LABEL_OS,
    LABEL_ZONE,
    Machine,
    MachineStatus,
)
from controller.api.meta import Condition, set_condition
from controller.runtime import Conflict, Controller, EventRecorder, Manager, NotFound, Request, Result, Store
from controller.runtime.client import Client
from controller.runtime.kinds import NODES
from provisioner import lifecycle
from provisioner import metrics as m
from provisioner.cloud import base as cloud
from provisioner.cloud.base import CloudProvider

log = logging.getLogger(__name__)


class _MachineDeleted(Exception):
    """Raised inside a reconcile once it has deleted the Machine: nothing more to write."""


NODE_PROVIDER_ID_INDEX = "spec.providerID"
MACHINE_PROVIDER_ID_INDEX = "status.providerID"
MAX_MESSAGE = 800  # gpu-provisioner's limit: enough for a whole ARM error


@dataclass
class Options:
    """Timings of the lifecycle; defaults are Karpenter's (15 min registration TTL)."""

    registration_ttl: float = 15 * 60.0
    launch_poll_interval: float = 5.0
    # a safety net while a registered Node is not yet initialized: Node events normally wake the
    # Machine, but one missed across an API server outage (and the error backoff it caused)
    # must not leave the Machine waiting forever
    init_poll_interval: float = 10.0
    delete_poll_interval: float = 5.0
    backoff_base: float = 5.0
    backoff_max: float = 300.0
    workers: int = 4
    # Only Machines carrying all these labels are ours (gpu-provisioner's KaitoMachinePredicate
    # idea); None: every Machine. Lets two provisioners, or tests, share one cluster.
    machine_selector: dict[str, str] | None = None


def _node_provider_id(node: dict) -> list[str]:
    pid = (node.get("spec") or {}).get("providerID")
    return [pid] if pid else []


def _machine_provider_id(machine: dict) -> list[str]:
    pid = (machine.get("status") or {}).get("providerID")
    return [pid] if pid else []


def install_indexes(machines: Store, nodes: Store) -> None:
    """Indexes the reconciler and the Node->Machine mapping rely on."""
    nodes.add_index(NODE_PROVIDER_ID_INDEX, _node_provider_id)
    nodes.add_label_index(LABEL_MACHINE_NAME)
    machines.add_index(MACHINE_PROVIDER_ID_INDEX, _machine_provider_id)


@dataclass
class _Step:
    """What one reconcile found out besides the status: labels to add, durations to record."""

    now: float
    labels: dict[str, str] = field(default_factory=dict)
    durations: list[tuple[Histogram, float]] = field(default_factory=list)

    def observe(self, histogram: Histogram, since: datetime | None) -> None:
        elapsed = _seconds_since(since, self.now)
        if elapsed is not None:
            self.durations.append((histogram, elapsed))


def _seconds_since(then: datetime | None, now: float) -> float | None:
    return None if then is None else max(0.0, now - then.timestamp())


class MachineReconciler:
    """One reconcile = one look at one Machine; see the module docstring for the stages."""

    def __init__(
        self,
        client: Client,
        provider: CloudProvider,
        machines: Store,
        nodes: Store,
        recorder: EventRecorder | None = None,
        options: Options | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.provider = provider
        self.machines = machines
        self.nodes = nodes
        self.recorder = recorder
        self.options = options or Options()
        self._clock = clock
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()

    # --- mapping -----------------------------------------------------------------------------
    def requests_for_node(self, node: dict) -> Iterable[Request]:
        """A Node event concerns the Machine named on its label, or whose providerID it carries."""
        names = set()
        label = ((node.get("metadata") or {}).get("labels") or {}).get(LABEL_MACHINE_NAME)
        if label:
            names.add(label)
        for pid in _node_provider_id(node):
            names.update(
                mm["metadata"]["name"] for mm in self.machines.by_index(MACHINE_PROVIDER_ID_INDEX, pid)
            )
        return [Request(None, name) for name in sorted(names)]

    # --- reconcile ---------------------------------------------------------------------------
    def reconcile(self, request: Request) -> Result:
        obj = self.machines.get(request.name)
        if obj is not None and not self._selected(obj):
            return Result()
        try:
            if obj is None:
                self._release_nodes_of_missing_machine(request.name)
                return Result()
            try:
                machine = Machine.from_k8s(obj)
            except ValidationError as exc:  # the CRD schema should prevent this; never crash on it
                self._event(obj, "Warning", "InvalidMachine", f"cannot read machine: {exc}"[:MAX_MESSAGE])
                return Result()
            if machine.metadata.deletion_timestamp:
                return self._finalize(obj, machine)
            if FINALIZER_TERMINATION not in (machine.metadata.finalizers or []):
                self._add_finalizer(obj)
                return Result()
            return self._reconcile_lifecycle(obj, machine)
        except Conflict:
            return Result(requeue=True)  # our cache was behind a write; look again
        except NotFound:
            # the Machine (or its Node) went away under us: our cache is behind a delete. Look
            # again once it caught up, without growing the error backoff of a finished Machine.
            return Result(requeue_after=1.0)

    def _reconcile_lifecycle(self, obj: dict, machine: Machine) -> Result:
        machine.status = machine.status or MachineStatus()
        machine.status.conditions = list(machine.status.conditions or [])
        step = _Step(now=self._clock())
        try:
            requeue_after = self._advance(machine, step)
        except _MachineDeleted:
            return Result()
        set_condition(machine.status.conditions, lifecycle.ready_condition(machine))
        self._write_status(obj, machine)
        # Only now that the transition is stored: a reconcile on a stale cache redoes a step,
        # fails its status write with a Conflict and must not count the step twice.
        for histogram, seconds in step.durations:
            histogram.labels(self.provider.name).observe(seconds)
        if step.labels:
            self.client.patch(MACHINES, machine.name, {"metadata": {"labels": step.labels}})
        return Result(requeue_after=requeue_after) if requeue_after else Result()

    def _advance(self, machine: Machine, step: _Step) -> float | None:
        """Take the next steps; returns when to look again (None: when something changes)."""
        if not lifecycle.is_true(machine, CONDITION_LAUNCHED):
            launched, requeue_after = self._launch(machine, step)
            if not launched:
                return requeue_after
        if not lifecycle.is_true(machine, CONDITION_REGISTERED):
            node, requeue_after = self._register(machine, step)
            if node is None:
                return requeue_after
        else:
            node = self._node_of(machine)
            if node is None or node["metadata"].get("deletionTimestamp"):
                self._node_went_away(machine)
        if lifecycle.is_true(machine, CONDITION_INITIALIZED) or self._initialize(machine, node, step):
            return None
        return self.options.init_poll_interval

    # --- stages ------------------------------------------------------------------------------
    def _launch(self, machine: Machine, step: _Step) -> tuple[bool, float | None]:
        """(launched, when to look again): create or look at the instance, record the outcome."""
        try:
            req = lifecycle.launch_request(machine)
        except lifecycle.InvalidMachine as exc:  # a person must fix the Machine; no retry
            self._set(machine, CONDITION_LAUNCHED, "False", "InvalidMachine", str(exc), warn=True)
            return False, None
        try:
            instance = self.provider.create(req)
        except cloud.InProgress as exc:
            self._set(machine, CONDITION_LAUNCHED, "Unknown", "Launching", exc.message)
            return False, self.options.launch_poll_interval
        except cloud.CloudError as exc:
            m.PROVIDER_ERRORS.labels(self.provider.name, "create", exc.reason).inc()
            self._set(machine, CONDITION_LAUNCHED, "False", exc.reason, exc.message[:MAX_MESSAGE], warn=True)
            return False, self._backoff(machine)
        self._forget_failures(machine)
        if not instance.provider_id:
            # The TTL also covers an instance that never gets as far as a providerID (an AKS pool
            # stuck in Creating): it counts from the instance's creation, as the tags record it.
            age = _seconds_since(instance.created_at, step.now)
            if age is not None and age >= self.options.registration_ttl:
                self._registration_timeout(machine)
                raise _MachineDeleted
            message = f"waiting for {self.provider.name} instance {instance.id} ({instance.state.value})"
            self._set(machine, CONDITION_LAUNCHED, "Unknown", "Launching", message)
            return False, self.options.launch_poll_interval
        status = machine.status
        assert status is not None
        status.provider_id = instance.provider_id
        status.capacity = {**instance.capacity} or status.capacity
        for key, value in instance.labels.items():
            if key in _INSTANCE_LABELS and (machine.metadata.labels or {}).get(key) != value:
                step.labels[key] = value
        self._set(
            machine,
            CONDITION_LAUNCHED,
            "True",
            "Launched",
            f"{self.provider.name} instance {instance.id} ({instance.instance_type})",
        )
        step.observe(m.LAUNCH_DURATION, cloud.parse_timestamp(machine.metadata.creation_timestamp))
        return True, None

    def _register(self, machine: Machine, step: _Step) -> tuple[dict | None, float | None]:
        """(the adopted Node, None) or (None, when to look again); raises _MachineDeleted on timeout."""
        status = machine.status
        assert status is not None
        candidates = self.nodes.by_index(NODE_PROVIDER_ID_INDEX, status.provider_id or "")
        candidates = [n for n in candidates if not n["metadata"].get("deletionTimestamp")]
        if len(candidates) > 1:
            names = ", ".join(n["metadata"]["name"] for n in candidates)
            self._set(
                machine, CONDITION_REGISTERED, "False", "MultipleNodesFound", f"nodes {names}", warn=True
            )
            return None, self.options.launch_poll_interval
        if not candidates:
            launched = (
                _seconds_since(lifecycle.transition_time(machine, CONDITION_LAUNCHED), step.now) or 0.0
            )
            left = self.options.registration_ttl - launched
            if left <= 0:
                self._registration_timeout(machine)
                raise _MachineDeleted
            message = f"waiting for a node with providerID {status.provider_id}"
            self._set(machine, CONDITION_REGISTERED, "Unknown", "NodeNotFound", message)
            return None, left + 0.5
        node = lifecycle.registered_node(candidates[0], machine)
        if node != candidates[0]:
            node = self.client.update(NODES, node)
        status.node_name = node["metadata"]["name"]
        self._set(machine, CONDITION_REGISTERED, "True", "Registered", f"node {status.node_name} registered")
        step.observe(m.REGISTRATION_DURATION, lifecycle.transition_time(machine, CONDITION_LAUNCHED))
        return node, None

    def _initialize(self, machine: Machine, node: dict, step: _Step) -> bool:
        """True once the Node is initialized (Ready, startup taints gone, resources allocatable)."""
        done, reason, message = lifecycle.initialization(node, machine)
        if not done:
            self._set(machine, CONDITION_INITIALIZED, "Unknown", reason, message)
            return False
        labels = node["metadata"].get("labels") or {}
        if labels.get(LABEL_INITIALIZED) != "true":
            self.client.patch(
                NODES,
                node["metadata"]["name"],
                {"metadata": {"labels": {LABEL_INITIALIZED: "true"}}},
            )
        status = machine.status
        assert status is not None
        status.allocatable = dict((node.get("status") or {}).get("allocatable") or {})
        self._set(machine, CONDITION_INITIALIZED, "True", reason, message)
        step.observe(m.INITIALIZATION_DURATION, lifecycle.transition_time(machine, CONDITION_REGISTERED))
        return True

    def _registration_timeout(self, machine: Machine) -> None:
        ttl = self.options.registration_ttl
        message = f"no node registered within {ttl:g}s of launching the instance; deleting the machine"
        self._set(machine, CONDITION_REGISTERED, "False", "RegistrationTimeout", message)
        obj = machine.to_k8s()
        with contextlib.suppress(Conflict, NotFound):  # the Event below still tells why
            self.client.update_status(MACHINES, obj)
        self._event(obj, "Warning", "RegistrationTimeout", message)
        m.REGISTRATION_TIMEOUTS.labels(self.provider.name).inc()
        log.warning("machine %s: %s", machine.name, message)
        self.client.delete(MACHINES, machine.name)

    def _node_went_away(self, machine: Machine) -> None:
        """A registered Machine whose Node is gone (or going) has nothing left to serve: delete it."""
        message = (
            f"node {machine.status.node_name if machine.status else ''} was deleted; deleting the machine"
        )
        self._event(machine.to_k8s(), "Warning", "NodeDeleted", message)
        log.warning("machine %s: %s", machine.name, message)
        self.client.delete(MACHINES, machine.name)
        raise _MachineDeleted

    # --- deletion ----------------------------------------------------------------------------
    def _finalize(self, obj: dict, machine: Machine) -> Result:
        """Node objects deleted -> instance gone -> Nodes released -> Machine finalizer dropped.

        The order is Karpenter's node termination: our finalizer keeps a deleted Node object in
        place until the instance is gone, so a kubelet that is still running cannot register the
        Node again behind our back (it re-creates a Node object that is missing, not one that is
        being deleted). No drain: the pods on a GPU node belong to the Workspace being torn down
        (or to a RayService that reschedules them), and this control plane has no eviction.
        """
        if FINALIZER_TERMINATION not in (machine.metadata.finalizers or []):
            return Result()
        nodes = self._nodes_of(machine)
        for node in nodes:
            if not node["metadata"].get("deletionTimestamp"):
                self.client.delete(NODES, node["metadata"]["name"])
        instance_id = self.provider.instance_id_for(machine.name, machine.metadata.uid or "")
        try:
            self.provider.delete(instance_id)
        except cloud.NotFound:
            pass
        except cloud.CloudError as exc:
            m.PROVIDER_ERRORS.labels(self.provider.name, "delete", exc.reason).inc()
            self._event(obj, "Warning", "TerminationFailed", exc.message[:MAX_MESSAGE])
            return Result(requeue_after=self._backoff(machine))
        else:
            return Result(requeue_after=self.options.delete_poll_interval)
        if self._release_nodes(nodes):
            return Result(requeue_after=1.0)  # until the cache shows them gone
        finalizers = [f for f in machine.metadata.finalizers or [] if f != FINALIZER_TERMINATION]
        self.client.patch(
            MACHINES,
            machine.name,
            {"metadata": {"finalizers": finalizers, "resourceVersion": machine.metadata.resource_version}},
        )
        self._forget_failures(machine)
        self._event(obj, "Normal", "Terminated", f"instance {instance_id} is gone")
        log.info("machine %s: terminated", machine.name)
        return Result()

    def _release_nodes(self, nodes: list[dict]) -> bool:
        """Delete the Nodes and drop our finalizer from them; True if there were any."""
        for node in nodes:
            name = node["metadata"]["name"]
            if not node["metadata"].get("deletionTimestamp"):
                self.client.delete(NODES, name)
            if FINALIZER_TERMINATION in (node["metadata"].get("finalizers") or []):
                with contextlib.suppress(NotFound):
                    self.client.patch(
                        NODES,
                        name,
                        {"metadata": {"$deleteFromPrimitiveList/finalizers": [FINALIZER_TERMINATION]}},
                        patch_type="strategic",
                    )
        return bool(nodes)

    def _release_nodes_of_missing_machine(self, name: str) -> None:
        """Nodes still labelled for a Machine that no longer exists are stale: let them go."""
        nodes = [
            n
            for n in self.nodes.by_index(LABEL_MACHINE_NAME, name)
            if FINALIZER_TERMINATION in (n["metadata"].get("finalizers") or [])
        ]
        if nodes:
            log.info(
                "machine %s is gone; releasing its nodes %s", name, [n["metadata"]["name"] for n in nodes]
            )
            self._release_nodes(nodes)

    def _add_finalizer(self, obj: dict) -> None:
        meta = obj["metadata"]
        self.client.patch(
            MACHINES,
            meta["name"],
            {
                "metadata": {
                    "finalizers": [*(meta.get("finalizers") or []), FINALIZER_TERMINATION],
                    "resourceVersion": meta["resourceVersion"],
                }
            },
        )

    # --- helpers -----------------------------------------------------------------------------
    def _selected(self, obj: dict) -> bool:
        wanted = self.options.machine_selector
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return not wanted or all(labels.get(k) == v for k, v in wanted.items())

    def _nodes_of(self, machine: Machine) -> list[dict]:
        found: dict[str, dict] = {}
        pid = machine.status.provider_id if machine.status else None
        if pid:
            found.update((n["metadata"]["name"], n) for n in self.nodes.by_index(NODE_PROVIDER_ID_INDEX, pid))
        found.update(
            (n["metadata"]["name"], n) for n in self.nodes.by_index(LABEL_MACHINE_NAME, machine.name)
        )
        return list(found.values())

    def _node_of(self, machine: Machine) -> dict | None:
        pid = machine.status.provider_id if machine.status else None
        nodes = self.nodes.by_index(NODE_PROVIDER_ID_INDEX, pid) if pid else []
        return nodes[0] if nodes else None

    def _set(
        self, machine: Machine, type_: str, status: str, reason: str, message: str, warn: bool = False
    ) -> None:
        conditions = machine.status.conditions  # type: ignore[union-attr]
        changed = set_condition(
            conditions,  # type: ignore[arg-type]
            Condition(type=type_, status=status, reason=reason, message=message),  # type: ignore[arg-type]
        )
        if changed and warn:
            self._event(machine.to_k8s(), "Warning", reason, message)

    def _event(self, obj: dict, type_: str, reason: str, message: str) -> None:
        if self.recorder is not None:
            self.recorder.event(obj, type_, reason, message)

    def _write_status(self, obj: dict, machine: Machine) -> None:
        new = machine.to_k8s()
        if new.get("status") != (obj.get("status") or {}):
            self.client.update_status(MACHINES, new)

    def _backoff(self, machine: Machine) -> float:
        key = machine.metadata.uid or machine.name
        with self._lock:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
        return min(self.options.backoff_base * (2**n), self.options.backoff_max)

    def _forget_failures(self, machine: Machine) -> None:
        with self._lock:
            self._failures.pop(machine.metadata.uid or machine.name, None)


# Labels that describe the instance and are copied onto the Machine (printer columns read them).
_INSTANCE_LABELS = frozenset(
    {LABEL_INSTANCE_TYPE, LABEL_ZONE, LABEL_ARCH, LABEL_OS, LABEL_CAPACITY_TYPE}
)


def add_to_manager(
    mgr: Manager, provider: CloudProvider, options: Options | None = None
) -> MachineReconciler:
    """Wire the reconciler into ``mgr``: shared Machine and Node informers, indexes, the controller."""
    options = options or Options()
    machines = mgr.informer(MACHINES)
    nodes = mgr.informer(NODES)
    install_indexes(machines.store, nodes.store)
    reconciler = MachineReconciler(
        mgr.client, provider, machines.store, nodes.store, mgr.event_recorder("kaito-provisioner"), options
    )
    ctrl = Controller("machine", reconciler, workers=options.workers)
    ctrl.watch(machines)
    ctrl.watch_mapped(nodes, reconciler.requests_for_node)
    mgr.add_controller(ctrl)
    return reconciler
