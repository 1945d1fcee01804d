"""The Machine reconciler: Machines (karpenter.sh/v1alpha5) or NodeClaims (karpenter.sh/v1) become
cloud instances and Nodes. One lifecycle for both API shapes: the reconciler is handed a
``NodeAPI`` and reads every condition type and label name off its model class, so "Machine" below
means either.

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

Each stage returns an ``Outcome`` (advanced / wait / deleted). What a pass learnt is stored in one
status write; the writes to Nodes it decided on (adoption, the initialized label) and the
Machine's instance labels follow that write, so a pass on a stale cache, whose status write fails
with a Conflict, has changed nothing. Adoption is re-checked on every pass, so a Node write that
failed after the status was stored is redone. Cloud failures back off by a runtime
``RateLimiter`` per Machine (the work queue's own limiter stays for errors of the reconcile).
The wiring into a Manager is ``provisioner/setup.py``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import Histogram
from pydantic import ValidationError

from controller.api.machine import (
    FINALIZER_TERMINATION,
    LABEL_ARCH,
    LABEL_CAPACITY_TYPE,
    LABEL_INITIALIZED,
    LABEL_INSTANCE_TYPE,
    LABEL_OS,
    LABEL_ZONE,
    NodeRequest,
)
from controller.api.meta import Condition, set_condition
from controller.api.nodeapi import MACHINE_API, NodeAPI
from controller.runtime import (
    Client,
    Conflict,
    EventRecorder,
    ItemExponentialFailureRateLimiter,
    NotFound,
    ObjectReconciler,
    RateLimiter,
    Request,
    Result,
    Store,
)
from controller.runtime.kinds import NODES
from provisioner import lifecycle
from provisioner import metrics as m
from provisioner.cloud import base as cloud
from provisioner.cloud.base import CloudProvider
from provisioner.indexes import NODE_PROVIDER_ID_INDEX
from provisioner.outcome import ADVANCED, DELETED, Outcome, wait

log = logging.getLogger(__name__)

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
    # per-Machine backoff of failed cloud calls: base * 2**failures, capped
    backoff_base: float = 5.0
    backoff_max: float = 300.0
    workers: int = 4
    # Only Machines carrying all these labels are ours (gpu-provisioner's KaitoMachinePredicate
    # idea); None: every Machine. Lets two provisioners, or tests, share one cluster.
    machine_selector: dict[str, str] | None = None


@dataclass
class _Step:
    """What one pass decided besides the status, applied once the status is stored."""

    now: float
    node: dict | None = None  # the Machine's Node as this pass sees it (adopted, if it was)
    node_update: dict | None = None  # the adopted Node, to PUT
    node_labels: dict[str, str] = field(default_factory=dict)  # to merge into the Node's labels
    labels: dict[str, str] = field(default_factory=dict)  # to merge into the Machine's labels
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
        backoff: RateLimiter | None = None,
        api: NodeAPI = MACHINE_API,
    ) -> None:
        self.api = api
        self.kind = api.kind
        self.client = client
        self.provider = provider
        self.machines = machines
        self.nodes = nodes
        self.recorder = recorder
        self.options = options or Options()
        self._clock = clock
        self.backoff: RateLimiter = backoff or ItemExponentialFailureRateLimiter(
            self.options.backoff_base, self.options.backoff_max
        )
        self._objects = ObjectReconciler(
            machines,
            api.model,
            self._reconcile_machine,
            gone=self._machine_gone,
            selects=self._selected,
            on_invalid=self._invalid,
        )

    # --- reconcile ---------------------------------------------------------------------------
    def reconcile(self, request: Request) -> Result:
        try:
            return self._objects.reconcile(request)
        except Conflict:
            return Result(requeue=True)  # our cache was behind a write; look again
        except NotFound:
            # the Machine (or its Node) went away under us: our cache is behind a delete. Look
            # again once it caught up, without growing the error backoff of a finished Machine.
            return Result(requeue_after=1.0)

    def _reconcile_machine(self, machine: NodeRequest, obj: dict) -> Result:
        if machine.metadata.deletion_timestamp:
            return self._finalize(obj, machine)
        if FINALIZER_TERMINATION not in (machine.metadata.finalizers or []):
            self._add_finalizer(obj)
            return Result()
        return self._reconcile_lifecycle(obj, machine)

    def _machine_gone(self, request: Request) -> None:
        self._release_nodes_of_missing_machine(request.name)

    def _invalid(self, obj: dict, exc: ValidationError) -> None:
        # the CRD schema should prevent this; never crash on it
        self._event(obj, "Warning", "InvalidMachine", f"cannot read machine: {exc}"[:MAX_MESSAGE])

    def _reconcile_lifecycle(self, obj: dict, machine: NodeRequest) -> Result:
        machine.status = machine.status or machine.STATUS()
        machine.status.conditions = list(machine.status.conditions or [])
        step = _Step(now=self._clock())
        outcome = self._advance(machine, step)
        if outcome.state == "deleted":
            return Result()
        set_condition(machine.status.conditions, lifecycle.ready_condition(machine))
        self._write_status(obj, machine)
        # Only now that the transition is stored: a reconcile on a stale cache redoes a step,
        # fails its status write with a Conflict and must neither count the step twice nor have
        # written to a Node on the strength of what it failed to store.
        for histogram, seconds in step.durations:
            histogram.labels(self.provider.name).observe(seconds)
        self._apply_node_writes(step)
        if step.labels:
            self.client.patch(self.kind, machine.name, {"metadata": {"labels": step.labels}})
        return Result(requeue_after=outcome.requeue_after) if outcome.requeue_after else Result()

    def _advance(self, machine: NodeRequest, step: _Step) -> Outcome:
        """Run the stages in order until one does not advance; all done: wait for a change."""
        for stage in (self._launch, self._register, self._initialize):
            outcome = stage(machine, step)
            if not outcome.advanced:
                return outcome
        return wait(None)

    def _apply_node_writes(self, step: _Step) -> None:
        if step.node_update is not None:
            self.client.update(NODES, step.node_update)
        if step.node_labels and step.node is not None:
            name = step.node["metadata"]["name"]
            self.client.patch(NODES, name, {"metadata": {"labels": step.node_labels}})

    # --- stages ------------------------------------------------------------------------------
    def _launch(self, machine: NodeRequest, step: _Step) -> Outcome:
        """Create or look at the instance and record the outcome (MachineLaunched)."""
        if lifecycle.is_true(machine, machine.CONDITION_LAUNCHED):
            return ADVANCED
        try:
            req = lifecycle.launch_request(machine)
        except lifecycle.InvalidMachine as exc:  # a person must fix the Machine; no retry
            self._set(machine, machine.CONDITION_LAUNCHED, "False", "InvalidMachine", str(exc), warn=True)
            return wait(None)
        try:
            instance = self.provider.create(req)
        except cloud.InProgress as exc:
            self._set(machine, machine.CONDITION_LAUNCHED, "Unknown", "Launching", exc.message)
            return wait(self.options.launch_poll_interval)
        except cloud.CloudError as exc:
            m.PROVIDER_ERRORS.labels(self.provider.name, "create", exc.reason).inc()
            self._set(
                machine, machine.CONDITION_LAUNCHED, "False", exc.reason, exc.message[:MAX_MESSAGE], warn=True
            )
            return wait(self._backoff(machine))
        self._forget_failures(machine)
        if not instance.provider_id:
            # The TTL also covers an instance that never gets as far as a providerID (an AKS pool
            # stuck in Creating): it counts from the instance's creation, as the tags record it.
            age = _seconds_since(instance.created_at, step.now)
            if age is not None and age >= self.options.registration_ttl:
                return self._registration_timeout(machine)
            message = f"waiting for {self.provider.name} instance {instance.id} ({instance.state.value})"
            self._set(machine, machine.CONDITION_LAUNCHED, "Unknown", "Launching", message)
            return wait(self.options.launch_poll_interval)
        status = machine.status
        assert status is not None
        status.provider_id = instance.provider_id
        status.capacity = {**instance.capacity} or status.capacity
        for key, value in instance.labels.items():
            if key in _INSTANCE_LABELS and (machine.metadata.labels or {}).get(key) != value:
                step.labels[key] = value
        self._set(
            machine,
            machine.CONDITION_LAUNCHED,
            "True",
            "Launched",
            f"{self.provider.name} instance {instance.id} ({instance.instance_type})",
        )
        step.observe(m.LAUNCH_DURATION, cloud.parse_timestamp(machine.metadata.creation_timestamp))
        return ADVANCED

    def _register(self, machine: NodeRequest, step: _Step) -> Outcome:
        """Find and adopt the Node with the instance's providerID (MachineRegistered); a Machine
        whose Node does not come within the TTL, or goes away later, is deleted."""
        if lifecycle.is_true(machine, machine.CONDITION_REGISTERED):
            node = self._node_of(machine)
            if node is None or node["metadata"].get("deletionTimestamp"):
                return self._node_went_away(machine)
            self._adopt(node, machine, step)  # again: a Node write that failed is redone
            return ADVANCED
        status = machine.status
        assert status is not None
        candidates = self.nodes.by_index(NODE_PROVIDER_ID_INDEX, status.provider_id or "")
        candidates = [n for n in candidates if not n["metadata"].get("deletionTimestamp")]
        if len(candidates) > 1:
            names = ", ".join(n["metadata"]["name"] for n in candidates)
            self._set(
                machine, machine.CONDITION_REGISTERED, "False", "MultipleNodesFound", f"nodes {names}",
                warn=True,
            )
            return wait(self.options.launch_poll_interval)
        if not candidates:
            launched = (
                _seconds_since(lifecycle.transition_time(machine, machine.CONDITION_LAUNCHED), step.now)
                or 0.0
            )
            left = self.options.registration_ttl - launched
            if left <= 0:
                return self._registration_timeout(machine)
            message = f"waiting for a node with providerID {status.provider_id}"
            self._set(machine, machine.CONDITION_REGISTERED, "Unknown", "NodeNotFound", message)
            return wait(left + 0.5)
        node = self._adopt(candidates[0], machine, step)
        status.node_name = node["metadata"]["name"]
        registered = f"node {status.node_name} registered"
        self._set(machine, machine.CONDITION_REGISTERED, "True", "Registered", registered)
        step.observe(m.REGISTRATION_DURATION, lifecycle.transition_time(machine, machine.CONDITION_LAUNCHED))
        return ADVANCED

    def _adopt(self, node: dict, machine: NodeRequest, step: _Step) -> dict:
        """The Node as ``machine`` adopts it (finalizer, labels, taints); a PUT if that changes it."""
        adopted = lifecycle.registered_node(node, machine)
        if adopted != node:
            step.node_update = adopted
        step.node = adopted
        return adopted

    def _initialize(self, machine: NodeRequest, step: _Step) -> Outcome:
        """Advanced once the Node is initialized (Ready, startup taints gone, resources allocatable)."""
        node = step.node
        assert node is not None  # _register found it
        if lifecycle.is_true(machine, machine.CONDITION_INITIALIZED):
            self._label_initialized(node, step)
            return ADVANCED
        done, reason, message = lifecycle.initialization(node, machine)
        if not done:
            self._set(machine, machine.CONDITION_INITIALIZED, "Unknown", reason, message)
            return wait(self.options.init_poll_interval)
        self._label_initialized(node, step)
        status = machine.status
        assert status is not None
        status.allocatable = dict((node.get("status") or {}).get("allocatable") or {})
        self._set(machine, machine.CONDITION_INITIALIZED, "True", reason, message)
        since = lifecycle.transition_time(machine, machine.CONDITION_REGISTERED)
        step.observe(m.INITIALIZATION_DURATION, since)
        return ADVANCED

    @staticmethod
    def _label_initialized(node: dict, step: _Step) -> None:
        if (node["metadata"].get("labels") or {}).get(LABEL_INITIALIZED) != "true":
            step.node_labels[LABEL_INITIALIZED] = "true"

    def _registration_timeout(self, machine: NodeRequest) -> Outcome:
        ttl = self.options.registration_ttl
        message = f"no node registered within {ttl:g}s of launching the instance; deleting the machine"
        self._set(machine, machine.CONDITION_REGISTERED, "False", "RegistrationTimeout", message)
        obj = machine.to_k8s()
        with contextlib.suppress(Conflict, NotFound):  # the Event below still tells why
            self.client.update_status(self.kind, obj)
        self._event(obj, "Warning", "RegistrationTimeout", message)
        m.REGISTRATION_TIMEOUTS.labels(self.provider.name).inc()
        log.warning("machine %s: %s", machine.name, message)
        self.client.delete(self.kind, machine.name)
        return DELETED

    def _node_went_away(self, machine: NodeRequest) -> Outcome:
        """A registered Machine whose Node is gone (or going) has nothing left to serve: delete it."""
        message = (
            f"node {machine.status.node_name if machine.status else ''} was deleted; deleting the machine"
        )
        self._event(machine.to_k8s(), "Warning", "NodeDeleted", message)
        log.warning("machine %s: %s", machine.name, message)
        self.client.delete(self.kind, machine.name)
        return DELETED

    # --- deletion ----------------------------------------------------------------------------
    def _finalize(self, obj: dict, machine: NodeRequest) -> Result:
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
            self.kind,
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
            for n in self.nodes.by_index(self.api.model.LABEL_NODE_OF, name)
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
            self.kind,
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

    def _nodes_of(self, machine: NodeRequest) -> list[dict]:
        found: dict[str, dict] = {}
        pid = machine.status.provider_id if machine.status else None
        if pid:
            found.update((n["metadata"]["name"], n) for n in self.nodes.by_index(NODE_PROVIDER_ID_INDEX, pid))
        found.update(
            (n["metadata"]["name"], n) for n in self.nodes.by_index(machine.LABEL_NODE_OF, machine.name)
        )
        return list(found.values())

    def _node_of(self, machine: NodeRequest) -> dict | None:
        pid = machine.status.provider_id if machine.status else None
        nodes = self.nodes.by_index(NODE_PROVIDER_ID_INDEX, pid) if pid else []
        return nodes[0] if nodes else None

    def _set(
        self, machine: NodeRequest, type_: str, status: str, reason: str, message: str, warn: bool = False
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

    def _write_status(self, obj: dict, machine: NodeRequest) -> None:
        new = machine.to_k8s()
        if new.get("status") != (obj.get("status") or {}):
            self.client.update_status(self.kind, new)

    def _backoff(self, machine: NodeRequest) -> float:
        """How long until the next try of a failed cloud call (counts the failure)."""
        return self.backoff.when(machine.metadata.uid or machine.name)

    def _forget_failures(self, machine: NodeRequest) -> None:
        self.backoff.forget(machine.metadata.uid or machine.name)


# Labels that describe the instance and are copied onto the Machine (printer columns read them).
_INSTANCE_LABELS = frozenset({LABEL_INSTANCE_TYPE, LABEL_ZONE, LABEL_ARCH, LABEL_OS, LABEL_CAPACITY_TYPE})
