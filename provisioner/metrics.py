"""Prometheus metrics of the provisioner (on prometheus_client's default registry).

Why these: an operator of GPU capacity asks "how many machines are stuck where", "how long does a
GPU node take to launch and to join", and "which cloud errors are we hitting" (quota, capacity,
SKU): the last one is the signal that a quota request is needed before users notice.
"""

from __future__ import annotations

from collections import Counter as _Tally
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from controller.api.machine import Machine, NodeRequest
from provisioner.lifecycle import PHASES, phase

# GPU nodes take minutes; buckets from 1 s to ~1 h.
_DURATION_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 180, 300, 600, 900, 1800, 3600)

LAUNCH_DURATION = Histogram(
    "kaito_provisioner_machine_launch_duration_seconds",
    "Time from Machine creation until the cloud instance has a providerID (MachineLaunched=True).",
    ["provider"],
    buckets=_DURATION_BUCKETS,
)
REGISTRATION_DURATION = Histogram(
    "kaito_provisioner_machine_registration_duration_seconds",
    "Time from MachineLaunched until the Node registered (MachineRegistered=True).",
    ["provider"],
    buckets=_DURATION_BUCKETS,
)
INITIALIZATION_DURATION = Histogram(
    "kaito_provisioner_machine_initialization_duration_seconds",
    "Time from MachineRegistered until the Node is ready with its GPUs allocatable.",
    ["provider"],
    buckets=_DURATION_BUCKETS,
)
PROVIDER_ERRORS = Counter(
    "kaito_provisioner_cloudprovider_errors_total",
    "Cloud provider calls that failed, by operation and reason (QuotaExceeded, InsufficientCapacity...).",
    ["provider", "operation", "reason"],
)
REGISTRATION_TIMEOUTS = Counter(
    "kaito_provisioner_machine_registration_timeouts_total",
    "Machines deleted because their Node did not register within the registration TTL.",
    ["provider"],
)
ORPHANS_DELETED = Counter(
    "kaito_provisioner_orphan_instances_deleted_total",
    "Cloud instances tagged as ours with no Machine, deleted by the orphan sweep.",
    ["provider"],
)


class MachinePhaseCollector(Collector):
    """``kaito_provisioner_machines{phase}``, computed from the Machine cache at scrape time.

    A collector rather than a Gauge kept in step by the reconciler: the cache is the truth, and a
    gauge updated on events drifts whenever an event is missed (deletes, restarts).
    """

    def __init__(self, machines: Callable[[], Iterable[dict]], model: type[NodeRequest] = Machine) -> None:
        self._machines = machines
        self._model = model

    def collect(self) -> Iterator[GaugeMetricFamily]:
        tally = _Tally(phase(m, self._model) for m in self._machines())
        family = GaugeMetricFamily(
            "kaito_provisioner_machines", "Machines by lifecycle phase.", labels=["phase"]
        )
        for name in PHASES:
            family.add_metric([name], tally.get(name, 0))
        yield family
