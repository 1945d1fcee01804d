"""The RayService reconciler of the stand-in: spec.serveConfigV2 -> Serve on the local head -> status.

It follows KubeRay's RayService controller (ray-operator/controllers/ray/rayservice_controller.go)
where the operator can observe a difference, and simplifies where it cannot:

* Every reconcile computes the *whole* desired Serve config from the informer cache (all live
  RayServices, see serveconfig.py) and PUTs it when it differs from what was last submitted, or
  when Serve reports no applications at all (head restarted: KubeRay resubmits in that case too).
  A changed serveConfigV2 is therefore an in-place redeploy, as in KubeRay; a deleted RayService
  simply drops out of the next PUT, which deletes its apps. No finalizer is needed (KubeRay has
  none on RayService either: the RayCluster goes by ownerReference); a leftover
  ``ray.io/rayservice-finalizer`` is removed once the apps are gone.
* Status, as KubeRay writes it: until all of a RayService's apps are RUNNING for the first time,
  its app statuses are reported under ``pendingServiceStatus`` (KubeRay's first RayCluster is the
  *pending* one); then the "cluster" is promoted and they live under ``activeServiceStatus`` from
  then on. ``numServeEndpoints`` is 1 while promoted and the Serve proxy is healthy. Conditions:
  Ready False/Initializing -> True/NonZeroServeEndpoints (-> False/ZeroServeEndpoints if the proxy
  dies); UpgradeInProgress False/Initializing -> False/NoPendingCluster; ValidationFailed for a
  serveConfigV2 that cannot be deployed or a name over 47 characters. ``serviceStatus: Running``
  mirrors Ready; ``observedGeneration`` is the spec generation the status describes.
* No stand-in extras in status: KubeRay's RayService schema prunes fields it does not know, so
  where the apps answer is said in KubeRay's own words, the cluster's ``rayClusterStatus``
  (``head.serviceIP`` and the ``endpoints`` port map: ``serve``, ``dashboard``), and
  ``serve_endpoint`` adds the RayService's route base to it. The requeue period is KubeRay's 2 s.
* Worker groups become Ray worker nodes (``workerpods.py`` derives the Pods KubeRay would create,
  ``ray_workers.py`` runs one ``ray start --address`` per Pod and restarts a node whose processes
  died, as KubeRay recreates the Pod); ``rayClusterStatus`` then counts them as KubeRay does
  (``desiredWorkerReplicas``, ``readyWorkerReplicas``, ``availableWorkerReplicas``). Without
  ``workers`` (attached to someone else's head) every replica runs on the head. The head's own
  group and the Pods' other fields (images, volumes) are not emulated.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from controller.api.meta import Condition, set_condition
from controller.api.rayservice import (
    CONDITION_READY,
    CONDITION_UPGRADE_IN_PROGRESS,
    SERVICE_STATUS_RUNNING,
    RayService,
)
from controller.runtime.client import ApiError, Client, NotFound, ResourceKind
from controller.runtime.controller import Request, Result
from controller.runtime.errors import AlreadyExists
from controller.runtime.events import EventRecorder
from controller.runtime.kinds import SECRETS
from controller.runtime.store import Store
from controller.workspace.probe import status_endpoint
from hack.kuberay_standin import ray_auth
from hack.kuberay_standin.dashboard import DashboardError, ServeDashboard
from hack.kuberay_standin.ray_workers import RayWorkers
from hack.kuberay_standin.serveconfig import (
    ParsedServeConfig,
    ServeConfigError,
    all_running,
    application_statuses,
    merged_config,
    parse_serve_config,
    route_base,
)
from hack.kuberay_standin.workerpods import WorkerPod, cluster_name, worker_pods

log = logging.getLogger(__name__)

LEGACY_FINALIZER = "ray.io/rayservice-finalizer"
MAX_NAME_LENGTH = 47  # KubeRay: 63 - len("-serve-svc") rounded down by its RayCluster suffix rule
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

# KubeRay's condition reasons (rayv1.RayServiceConditionReason) and event reasons (utils/constant.go).
REASON_INITIALIZING = "Initializing"
REASON_NON_ZERO = "NonZeroServeEndpoints"
REASON_ZERO = "ZeroServeEndpoints"
REASON_VALIDATION_FAILED = "ValidationFailed"
REASON_NO_PENDING = "NoPendingCluster"
REASON_INITIALIZING_TIMEOUT = "InitializingTimeout"
INITIALIZING_TIMEOUT_ANNOTATION = "ray.io/initializing-timeout"
EVENT_INITIALIZING_TIMEOUT = "RayServiceInitializingTimeout"
EVENT_UPDATED = "UpdatedServeApplications"
EVENT_UPDATE_FAILED = "FailedToUpdateServeApplications"
EVENT_INVALID_SPEC = "InvalidRayServiceSpec"
EVENT_INVALID_METADATA = "InvalidRayServiceMetadata"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


class RayServiceStandin:
    """Reconciler (controller.runtime ``Reconciler`` protocol) for RayServices on one Ray head."""

    def __init__(
        self,
        client: Client,
        kind: ResourceKind,
        store: Store,
        dashboard: ServeDashboard,
        serve_host: str,
        serve_port: int,
        dashboard_url: str,
        recorder: EventRecorder | None = None,
        poll_interval: float = 2.0,
        workers: RayWorkers | None = None,
        nodes: Store | None = None,
        auth_token: str | None = None,
    ) -> None:
        self.client = client
        self.kind = kind
        self.store = store
        self.dashboard = dashboard
        self.serve_host = serve_host
        self.serve_port = serve_port
        self.dashboard_url = dashboard_url
        self.recorder = recorder
        self.poll_interval = poll_interval
        self.workers = workers  # None: no worker nodes, every replica on the head
        self.nodes = nodes  # the Kubernetes Nodes the worker Pods are scheduled to
        self.auth_token = auth_token  # the head's Ray auth token (None: the head runs without auth)
        self._auth_warned: set[str] = set()  # RayServices told that the head has no auth (by uid)
        self._ready_pods: dict[str, list[WorkerPod]] = {}  # RayService key -> its ready worker Pods
        self._pods: dict[str, list[WorkerPod]] = {}  # RayService key -> its worker Pods
        self._lock = threading.Lock()  # one PUT at a time; the submitted config is shared state
        self._submitted: dict[str, Any] | None = None
        self._parsed: dict[str, tuple[tuple[Any, Any], ParsedServeConfig | tuple[str, str]]] = {}
        self.submissions = 0  # how many PUTs were sent (tests, logs)

    # --- the shared Serve config --------------------------------------------------------------------
    def _desired(self) -> tuple[dict[str, ParsedServeConfig], dict[str, tuple[str, str]]]:
        """Every live RayService's parsed config by key, and the rejected ones: key -> (event, error)."""
        configs: dict[str, ParsedServeConfig] = {}
        rejected: dict[str, tuple[str, str]] = {}
        live: set[str] = set()
        for obj in self.store.list():
            meta = obj.get("metadata") or {}
            if meta.get("deletionTimestamp"):
                continue
            key = _key(obj)
            live.add(key)
            if _timed_out(obj):
                continue  # terminal: KubeRay deletes its cluster, so its apps leave Serve
            # Parsing runs Serve's schema: cache it per spec generation (reconciles run every 2 s).
            stamp = (meta.get("uid"), meta.get("generation"))
            cached = self._parsed.get(key)
            if cached is None or cached[0] != stamp:
                cached = (stamp, _parse(obj))
                self._parsed[key] = cached
            result = cached[1]
            if isinstance(result, ParsedServeConfig):
                configs[key] = result
            else:
                rejected[key] = result
        for key in set(self._parsed) - live:
            del self._parsed[key]
        return configs, rejected

    def sync_serve(self) -> tuple[dict[str, ParsedServeConfig], dict[str, tuple[str, str]], dict[str, Any]]:
        """Submit the union of all RayServices if it changed; return (configs, rejected, Serve details)."""
        with self._lock:
            configs, rejected = self._desired()
            desired = merged_config(list(configs.values()), self.serve_host, self.serve_port)
            details = self.dashboard.get_details()
            lost = bool(desired["applications"]) and not details.get("applications")
            if desired != self._submitted or lost:
                if lost and desired == self._submitted:
                    log.warning("Serve reports no applications (head restarted?): resubmitting")
                self._submit(desired, configs)
                details = self.dashboard.get_details()
            return configs, rejected, details

    def _submit(self, desired: dict[str, Any], configs: dict[str, ParsedServeConfig]) -> None:
        names = [app["name"] for app in desired["applications"]]
        log.info("PUT Serve config: %d application(s): %s", len(names), ", ".join(names) or "-")
        try:
            self.dashboard.put_config(desired)
        except DashboardError as exc:
            for key in configs:
                obj = self.store.get(key)
                if obj is not None and self.recorder is not None:
                    self.recorder.event(obj, "Warning", EVENT_UPDATE_FAILED, str(exc))
            raise
        previous = {app["name"]: app for app in (self._submitted or {}).get("applications", [])}
        self._submitted = desired
        self.submissions += 1
        if self.recorder is None:
            return
        for key, cfg in configs.items():
            mine = [
                desired_app
                for desired_app in desired["applications"]
                if desired_app["name"] in cfg.serve_names.values()
            ]
            if any(previous.get(app["name"]) != app for app in mine):
                obj = self.store.get(key)
                if obj is not None:
                    self.recorder.event(
                        obj,
                        "Normal",
                        EVENT_UPDATED,
                        f"Submitted {len(mine)} Serve application(s) to the local Ray head "
                        f"at {self.dashboard_url}",
                    )

    # --- the worker nodes -----------------------------------------------------------------------------
    def sync_workers(self) -> None:
        """Every live RayService's worker Pods as running Ray nodes (level-triggered, all at once:
        the nodes of RayServices deleted meanwhile are stopped); records which are ready."""
        if self.workers is None:
            return
        nodes = self.nodes.list() if self.nodes is not None else []
        pods: dict[str, list[WorkerPod]] = {}
        for obj in self.store.list():
            if (obj.get("metadata") or {}).get("deletionTimestamp") or _timed_out(obj):
                continue  # KubeRay deletes the cluster of a deleted or timed-out RayService
            pods[_key(obj)] = worker_pods(obj, nodes)
        alive = self.workers.alive_pods()
        self.workers.sync([p for group in pods.values() for p in group], alive)
        self._pods = pods
        self._ready_pods = {key: self.workers.ready_pods(group, alive) for key, group in pods.items()}

    # --- reconcile ----------------------------------------------------------------------------------
    def reconcile(self, request: Request) -> Result:
        self.sync_workers()
        configs, rejected, details = self.sync_serve()
        obj = self.store.get(request.key)
        if obj is None:
            return Result()  # deleted: its apps left Serve with the PUT above
        meta = obj.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return self._finalize(obj, details)
        if _timed_out(obj):
            return Result()  # terminal until the RayService is recreated, as in KubeRay
        if request.key in rejected:
            event, message = rejected[request.key]
            changed = self._write_status(obj, self._validation_failed_status(obj, message))
            if changed and self.recorder is not None:
                self.recorder.event(obj, "Warning", event, message)
            return Result()  # a spec change (new generation) re-enqueues it
        if ray_auth.wants_token_auth(obj):
            self._ensure_token_secret(obj)
        cfg = configs[request.key]
        status = self._status(obj, cfg, details)
        changed = self._write_status(obj, status)
        if changed and self.recorder is not None and _timed_out({"status": status}):
            ready = next(c for c in status["conditions"] if c["type"] == CONDITION_READY)
            self.recorder.event(obj, "Warning", EVENT_INITIALIZING_TIMEOUT, ready["message"])
        return Result(requeue_after=self.poll_interval)

    def _ensure_token_secret(self, obj: dict) -> None:
        """KubeRay's ``reconcileAuthSecret``: the cluster's token Secret, created if missing (the
        head's token: one head, one token), never rewritten; looked up on every reconcile, as
        KubeRay does. A head without auth cannot give a RayService the auth it asks for: a
        Warning Event says so, once per RayService."""
        uid = obj["metadata"].get("uid", "")
        if self.auth_token is None:
            if uid not in self._auth_warned:
                self._auth_warned.add(uid)
                log.warning("%s asks for Ray token auth; this stand-in's head runs without it", _key(obj))
                if self.recorder is not None:
                    self.recorder.event(obj, "Warning", "TokenAuthUnavailable", "authOptions.mode is "
                                        "token, but the stand-in's Ray head runs without auth")
            return
        secret = ray_auth.token_secret(obj, cluster_name(obj["metadata"]["name"]), self.auth_token)
        try:
            self.client.get(SECRETS, secret["metadata"]["name"], secret["metadata"]["namespace"])
        except NotFound:
            with contextlib.suppress(AlreadyExists):
                self.client.create(SECRETS, secret)

    def _finalize(self, obj: dict, details: dict[str, Any]) -> Result:
        """Drop the legacy finalizer once none of this RayService's apps is left in Serve."""
        meta = obj["metadata"]
        if LEGACY_FINALIZER not in (meta.get("finalizers") or []):
            return Result()
        prefix = f"{meta.get('namespace')}.{meta['name']}."
        if any(name.startswith(prefix) for name in details.get("applications") or {}):
            return Result(requeue_after=self.poll_interval)
        finalizers = [f for f in meta["finalizers"] if f != LEGACY_FINALIZER]
        updated = {**obj, "metadata": {**meta, "finalizers": finalizers}}
        with contextlib.suppress(NotFound):
            self.client.update(self.kind, updated)
        return Result()

    # --- status -------------------------------------------------------------------------------------
    def _status(self, obj: dict, cfg: ParsedServeConfig, details: dict[str, Any]) -> dict[str, Any]:
        rs = RayService.from_k8s(obj)
        old = rs.status.to_k8s() if rs.status else {}
        generation = rs.metadata.generation
        statuses = application_statuses(cfg, details.get("applications") or {})
        active = dict(old.get("activeServiceStatus") or {})
        promoted = bool(active.get("rayClusterName"))
        cluster = self._cluster_status(rs.name, _key(obj))
        if not promoted and all_running(cfg, statuses):
            promoted = True  # KubeRay: the pending cluster is ready -> promote it to active
        if promoted:
            active = {**cluster, "applicationStatuses": statuses}
            pending: dict[str, Any] = {}
        else:
            active = {}
            pending = {**cluster, "applicationStatuses": statuses}
        endpoints = 1 if promoted and _proxy_healthy(details) else 0

        conditions = [Condition.model_validate(c) for c in old.get("conditions") or []]
        if not conditions:
            for type_ in (CONDITION_READY, CONDITION_UPGRADE_IN_PROGRESS):
                set_condition(
                    conditions,
                    Condition(
                        type=type_,
                        status="False",
                        reason=REASON_INITIALIZING,
                        message="RayService is initializing",
                        observed_generation=generation,
                    ),
                )
        ready = next(c for c in conditions if c.type == CONDITION_READY)
        if endpoints > 0:
            set_condition(
                conditions,
                Condition(
                    type=CONDITION_READY,
                    status="True",
                    reason=REASON_NON_ZERO,
                    message="Number of serve endpoints is greater than 0",
                    observed_generation=generation,
                ),
            )
        elif ready.status == "True":
            set_condition(
                conditions,
                Condition(
                    type=CONDITION_READY,
                    status="False",
                    reason=REASON_ZERO,
                    message="Number of serve endpoints dropped to 0",
                    observed_generation=generation,
                ),
            )
        elif ready.reason == REASON_VALIDATION_FAILED:
            set_condition(
                conditions,
                Condition(
                    type=CONDITION_READY,
                    status="False",
                    reason=REASON_INITIALIZING,
                    message="RayService is initializing",
                    observed_generation=generation,
                ),
            )
        elif ready.reason == REASON_INITIALIZING and (timeout := initializing_timeout(obj)) is not None:
            spent = (datetime.now(UTC) - (ready.last_transition_time or datetime.now(UTC))).total_seconds()
            if spent >= timeout:
                set_condition(
                    conditions,
                    Condition(
                        type=CONDITION_READY,
                        status="False",
                        reason=REASON_INITIALIZING_TIMEOUT,
                        message=f"RayService failed to become ready within the configured timeout of "
                        f"{timeout:g}s. Time spent initializing: {spent:.0f}s",
                        observed_generation=generation,
                    ),
                )
                pending.pop("rayClusterName", None)  # KubeRay clears it to delete the cluster
        if promoted:
            set_condition(
                conditions,
                Condition(
                    type=CONDITION_UPGRADE_IN_PROGRESS,
                    status="False",
                    reason=REASON_NO_PENDING,
                    message="Active Ray cluster exists and no pending Ray cluster",
                    observed_generation=generation,
                ),
            )
        for c in conditions:
            c.observed_generation = generation
        is_ready = any(c.type == CONDITION_READY and c.status == "True" for c in conditions)
        status: dict[str, Any] = {
            "conditions": [c.to_k8s() for c in conditions],
            "numServeEndpoints": endpoints,
            "observedGeneration": generation,
            "activeServiceStatus": active or None,
            "pendingServiceStatus": pending or None,
            "serviceStatus": SERVICE_STATUS_RUNNING if is_ready else None,
        }
        return {k: v for k, v in status.items() if v is not None}

    def _validation_failed_status(self, obj: dict, message: str) -> dict[str, Any]:
        rs_status = (obj.get("status") or {}).copy()
        generation = (obj.get("metadata") or {}).get("generation")
        conditions = [Condition.model_validate(c) for c in rs_status.get("conditions") or []]
        set_condition(
            conditions,
            Condition(
                type=CONDITION_READY,
                status="False",
                reason=REASON_VALIDATION_FAILED,
                message=message[:32768],
                observed_generation=generation,
            ),
        )
        rs_status["conditions"] = [c.to_k8s() for c in conditions]
        rs_status["observedGeneration"] = generation
        rs_status.pop("serviceStatus", None)
        return rs_status

    def _cluster_status(self, name: str, key: str) -> dict[str, Any]:
        status: dict[str, Any] = {
            "state": "ready",
            "head": {"podIP": self.serve_host, "serviceIP": self.serve_host},
            # KubeRay's map of the head's named ports (gcs-server, dashboard, client, serve)
            "endpoints": {"serve": str(self.serve_port), "dashboard": str(self._dashboard_port)},
        }
        if self.workers is not None:
            # KubeRay's counts of the worker Pods (ready: running and Ready; no probes here, so
            # ready = available = the node's processes run and the GCS lists it ALIVE)
            desired, ready = len(self._pods.get(key, [])), len(self._ready_pods.get(key, []))
            status.update(
                desiredWorkerReplicas=desired, readyWorkerReplicas=ready, availableWorkerReplicas=ready
            )
        return {"rayClusterName": cluster_name(name), "rayClusterStatus": status}

    @property
    def _dashboard_port(self) -> int:
        return urlsplit(self.dashboard_url).port or 8265

    def serve_url(self, namespace: str, name: str) -> str:
        return f"http://{self.serve_host}:{self.serve_port}{route_base(namespace, name)}"

    def _write_status(self, obj: dict, status: dict[str, Any]) -> bool:
        """PUT the status if it changed (ignoring timestamps); returns whether it was written."""
        old = obj.get("status") or {}
        if _comparable(old) == _comparable(status):
            return False
        status["lastUpdateTime"] = _now()
        try:
            self.client.update_status(self.kind, {**obj, "status": status})
        except NotFound:
            return False  # deleted meanwhile
        except ApiError:
            raise  # Conflict (stale cache): the controller requeues with backoff
        apps = (status.get("activeServiceStatus") or status.get("pendingServiceStatus") or {}).get(
            "applicationStatuses"
        ) or {}
        log.info(
            "%s: Ready=%s apps=%s",
            _key(obj),
            next((c["status"] for c in status["conditions"] if c["type"] == CONDITION_READY), "?"),
            {a: s.get("status") for a, s in apps.items()},
        )
        return True


def _parse(obj: dict) -> ParsedServeConfig | tuple[str, str]:
    """One RayService's Serve apps, or why it cannot be deployed: (event reason, message)."""
    meta = obj.get("metadata") or {}
    name, namespace = meta.get("name", ""), meta.get("namespace") or "default"
    problem = _metadata_problem(meta)
    if problem:
        return (EVENT_INVALID_METADATA, problem)
    try:
        RayService.from_k8s(obj)
    except ValidationError as exc:
        return (EVENT_INVALID_SPEC, f"invalid RayService: {exc}")
    try:
        return parse_serve_config(namespace, name, (obj.get("spec") or {}).get("serveConfigV2"))
    except ServeConfigError as exc:
        return (EVENT_INVALID_SPEC, str(exc))


def _metadata_problem(meta: dict[str, Any]) -> str | None:
    """KubeRay's ValidateRayServiceMetadata."""
    name = meta.get("name", "")
    if len(name) > MAX_NAME_LENGTH:
        return f"RayService name should be no more than {MAX_NAME_LENGTH} characters"
    if not DNS1035.match(name):
        return f"RayService name should be a valid DNS1035 label: {name!r}"
    raw = (meta.get("annotations") or {}).get(INITIALIZING_TIMEOUT_ANNOTATION)
    if raw and parse_duration(raw) is None:
        return (
            f"annotation {INITIALIZING_TIMEOUT_ANNOTATION}={raw!r} is neither a Go duration (30m, 1h30m) "
            "nor a number of seconds"
        )
    return None


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text: str) -> float | None:
    """Seconds in a Go duration ("30m", "1h30m", "90s") or a plain integer of seconds; else None."""
    text = text.strip()
    if text.isdigit():
        return float(text)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def initializing_timeout(obj: dict) -> float | None:
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(INITIALIZING_TIMEOUT_ANNOTATION)
    return parse_duration(raw) if raw else None


def _timed_out(obj: dict) -> bool:
    """KubeRay's isInitializingTimeout: a terminal Ready=False/InitializingTimeout."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == CONDITION_READY:
            return c.get("status") == "False" and c.get("reason") == REASON_INITIALIZING_TIMEOUT
    return False


def _proxy_healthy(details: dict[str, Any]) -> bool:
    """True when some Serve proxy reports HEALTHY (the head's ray.io/serve=true label in KubeRay)."""
    for proxy in (details.get("proxies") or {}).values():
        status = proxy.get("status") if isinstance(proxy, dict) else proxy
        if status == "HEALTHY":
            return True
    return False


def _comparable(status: dict[str, Any]) -> dict[str, Any]:
    """A status without the fields that change on every write."""
    out = {k: v for k, v in status.items() if k != "lastUpdateTime"}
    out["conditions"] = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status.get("conditions") or []
    ]
    return out


def serve_endpoint(rayservice: dict) -> str | None:
    """Where a RayService's apps answer on the stand-in's one Serve proxy, from its status as
    KubeRay writes it (the active cluster's, else the pending one's, head address and serve
    port) plus the RayService's route base; None until the status says. The controller's
    first-request probe reads the same fields (controller.workspace.probe.status_endpoint)."""
    return status_endpoint(rayservice)
