"""The Workspace reconciler: finalizer -> validate -> estimate -> Machines -> RayService/Job -> status.

Level-triggered and idempotent: every pass reads the Workspace and what it owns from the informer
caches, creates whatever is missing under deterministic names, and rebuilds the status from what
it saw. So a pass may be repeated, interrupted or run by a freshly started controller without
creating anything twice. Nothing here blocks a worker: while Machines come up the pass returns
``requeue_after`` (and Machine/RayService events wake it earlier). Conflicts on writes are
requeued with backoff; user mistakes end up in conditions and Events, never in a crash loop.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from controller.api.kinds import RAYCLUSTERS, RAYSERVICES, WORKSPACES
from controller.api.nodeapi import MACHINE_API, NodeAPI
from controller.api.pod import LABEL_RAY_NODE_TYPE
from controller.api.validation import reconcile_problem
from controller.api.workspace import (
    CONDITION_WORKSPACE_DELETING,
    CONDITION_WORKSPACE_READY,
    INFERENCE_PHASES,
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_NAMESPACE,
    PHASE_FIRST_REQUEST_ANSWERED,
    PHASE_WEIGHTS_LOADED,
    TUNING_PHASES,
    PhaseEnd,
    Workspace,
)
from controller.runtime import (
    AlreadyExists,
    ApiError,
    Client,
    Conflict,
    EventRecorder,
    Invalid,
    NotFound,
    ObjectReconciler,
    Request,
    ResourceKind,
    Result,
    Store,
)
from controller.runtime.events import ObjectReference
from controller.runtime.kinds import CONFIGMAPS, JOBS, NETWORKPOLICIES, SECRETS, SERVICES
from controller.workspace import (
    byo,
    cluster_rollout,
    diagnosis,
    metrics,
    model_record,
    names,
    probe,
    relaunch,
    timeline,
)
from controller.workspace.hf_hub import DEFAULT_ENDPOINT, HubClient
from controller.workspace.inference import (
    InferenceState,
    build_rayservice,
    build_service,
    merged_service_spec,
    pod_labels,
    rayservice_state,
    wants_load_balancer,
)
from controller.workspace.machines import (
    MachineSummary,
    build_node_request,
    desired_machine_names,
    summarize_machines,
)
from controller.workspace.model_resolver import (
    REASON_HUB_UNREACHABLE,
    REASON_MODEL_ACCESS_DENIED,
    REASON_MODEL_NOT_FOUND,
    REASON_MODEL_RESOLVED,
    ModelProblem,
    ModelResolver,
    ResolvedModel,
)
from controller.workspace.netpol import build_network_policy
from controller.workspace.plan import Plan, PlanError, plan_for
from controller.workspace.runtime_config import (
    REASON_INFERENCE_CONFIG_NOT_FOUND,
    ConfigProblem,
    check_inference_config,
)
from controller.workspace.serveconfig import build_serve_config
from controller.workspace.status import REASON_RELAUNCH_LIMIT, Observation, apply_observation, served_before
from controller.workspace.tuning import (
    REASON_CONFIG_NOT_FOUND,
    ConfigCheck,
    JobState,
    build_tuning_job,
    check_training_config,
    job_state,
)
from presets.hf_config import REASON_ARCHITECTURE_NOT_SUPPORTED, REASON_CONFIG_INVALID

log = logging.getLogger(__name__)


ANNOTATION_SPEC_HASH = "kaito.sh/spec-hash"
DEFAULT_SERVE_IMAGE = "ghcr.io/kaito-py/rayserve:0.1.0"
MACHINE_INDEX = "label:" + LABEL_WORKSPACE
POD_INDEX = MACHINE_INDEX  # the Ray pods carry the same label (inference.pod_labels)
# which pods the controller caches: Ray pods (KubeRay labels their node type) of Workspaces
RAY_POD_SELECTOR = f"{LABEL_WORKSPACE},{LABEL_RAY_NODE_TYPE}"

# Condition reasons that are worth a Warning event (something failed, a person should look).
WARNING_REASONS = frozenset({
    "InvalidWorkspace", "EstimateFailed", "MachineLaunchFailed", "ServeApplicationFailed",
    REASON_RELAUNCH_LIMIT,
    "ServeConfigFailed", "WorkspaceFailed", "RayServiceInvalid", "ValidationFailed", "InitializingTimeout",
    REASON_CONFIG_NOT_FOUND, REASON_INFERENCE_CONFIG_NOT_FOUND, *diagnosis.REASONS,
    REASON_MODEL_NOT_FOUND, REASON_MODEL_ACCESS_DENIED, REASON_HUB_UNREACHABLE,
    REASON_ARCHITECTURE_NOT_SUPPORTED, REASON_CONFIG_INVALID,
})
HF_TOKEN_KEY = "HF_TOKEN"  # the key of modelAccessSecret (as Kaito's and the serve pods' secretKeyRef)


@dataclass
class Stores:
    """The informer caches the reconciler reads (the Manager's shared informers)."""

    workspaces: Store
    machines: Store
    rayservices: Store
    services: Store
    jobs: Store
    pods: Store = field(default_factory=Store)  # the Ray pods (RAY_POD_SELECTOR)
    nodes: Store = field(default_factory=Store)  # for bring-your-own nodes (byo.py)
    network_policies: Store | None = None  # None: the operator ships no NetworkPolicy


@dataclass
class Options:
    serve_image: str = DEFAULT_SERVE_IMAGE
    tuning_image: str = DEFAULT_SERVE_IMAGE
    # Ray's token auth on every workspace's Ray cluster, through KubeRay v1.6's authOptions (ray_auth.py)
    ray_token_auth: bool = True
    # Serve's HAProxy ingress instead of its Python proxy (rayserve.spec.HAPROXY_ENV: faster; a
    # client that leaves a non-streamed request does not stop its generation)
    serve_haproxy: bool = False
    machine_poll_seconds: float = 5.0  # re-check while Machines come up (events usually come first)
    inference_poll_seconds: float = 30.0  # safety net while waiting for KubeRay
    # look again at a missing or invalid tuning ConfigMap: no informer watches ConfigMaps (caching
    # every ConfigMap in the cluster to notice one being created costs more than a GET per poll)
    config_poll_seconds: float = 10.0
    deletion_poll_seconds: float = 2.0
    # the timeline's FirstRequestAnswered (controller/workspace/probe.py): where the one-token
    # request goes; "off" here, so tests and embedders opt in (kaito-controller's flag says "service")
    first_request_url: probe.URLSource = "off"
    first_request_poll_seconds: float = 5.0
    first_request_window_seconds: float = 900.0  # stop asking this long after the weights loaded
    # kaito.sh/enablelb makes a LoadBalancer only when the operator allows it (--allow-load-balancer)
    allow_load_balancer: bool = False
    load_balancer_source_ranges: tuple[str, ...] = ()
    # "gpu-provisioner": Machines/NodeClaims for what preferredNodes do not cover; "byo": nothing is
    # provisioned, the workspace waits for existing matching nodes (controller/workspace/byo.py)
    node_provisioner: str = byo.PROVISION
    # node objects whose Workspace is gone (finalizer stripped) are deleted this long after their
    # creation, checked this often (controller/workspace/orphans.py); interval 0 turns it off
    orphan_grace_seconds: float = 300.0
    orphan_interval_seconds: float = 60.0
    # a Machine that went away before it was Ready (the provisioner's registration timeout) is
    # re-created after a backoff that doubles, at most this many times in a row (relaunch.py)
    relaunch_limit: int = 3
    relaunch_backoff_seconds: float = 60.0
    relaunch_backoff_max_seconds: float = 900.0
    # the Hugging Face hub uncatalogued model ids are read from (model_resolver.py) and that the serve
    # pods download from (HF_ENDPOINT); None: huggingface.co, and no HF_ENDPOINT in the pods
    hf_endpoint: str | None = None
    hf_timeout_seconds: float = 10.0  # per request: a reconcile worker never hangs on the hub
    model_backoff_seconds: float = 10.0  # a model that cannot be resolved is retried after this,
    model_backoff_max_seconds: float = 300.0  # doubling up to this


def reference(ws: Workspace) -> ObjectReference:
    """What an Event about ``ws`` names (its ``involvedObject``)."""
    meta = ws.metadata
    return ObjectReference(kind=ws.kind, name=ws.name, namespace=ws.namespace, uid=meta.uid,
                           api_version=ws.api_version, resource_version=meta.resource_version)


def _hash(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


class WorkspaceReconciler:
    """``reconcile(Request) -> Result`` for kaito.sh Workspaces (see module docstring)."""

    def __init__(
        self,
        client: Client,
        stores: Stores,
        recorder: EventRecorder | None = None,
        options: Options | None = None,
        planner: Callable[[Workspace], Plan] | None = None,
        validator: Callable[[Workspace], str | None] = reconcile_problem,
        serve_config: Callable[[Workspace, Plan], str] = build_serve_config,
        prober: Callable[[str, str], bool] = probe.answered,
        node_api: NodeAPI = MACHINE_API,
        model_resolver: ModelResolver | None = None,
    ) -> None:
        self.node_api = node_api  # Machines or NodeClaims (controller.api.nodeapi)
        self.client = client
        self.stores = stores
        stores.pods.add_label_index(LABEL_WORKSPACE)  # POD_INDEX (idempotent)
        self.recorder = recorder
        self.options = options or Options()
        # the catalog's estimate; a partitioned workspace's from the Nodes the cache holds
        self.planner = planner or (lambda ws: plan_for(ws, nodes=self.stores.nodes.list()))
        self.validator = validator
        self.serve_config = serve_config
        self.prober = prober
        opts = self.options
        self.model_resolver = model_resolver or ModelResolver(
            HubClient(opts.hf_endpoint or DEFAULT_ENDPOINT, opts.hf_timeout_seconds),
            backoff_seconds=opts.model_backoff_seconds, backoff_max_seconds=opts.model_backoff_max_seconds)
        # fetch from the cache, parse, skip (and log) what does not parse; a gone key needs nothing:
        # the finalizer already released what it held
        self._objects = ObjectReconciler(stores.workspaces, Workspace, self._reconcile_workspace)

    # --- entry point ------------------------------------------------------------------------------
    def reconcile(self, request: Request) -> Result:
        try:
            return self._objects.reconcile(request)
        except Conflict as exc:
            log.info("workspace %s: conflict (%s); requeueing", request.key, exc.message)
            return Result(requeue=True)

    def _reconcile_workspace(self, ws: Workspace, raw: dict) -> Result:
        """One parsed Workspace (the ObjectReconciler fetched and parsed it from the cache)."""
        if ws.metadata.deletion_timestamp:
            return self._finalize(ws)
        if names.FINALIZER not in (ws.metadata.finalizers or []):
            ws = Workspace.model_validate(self._add_finalizer(ws))
        return self._sync(ws)

    # --- the normal path --------------------------------------------------------------------------
    def _sync(self, ws: Workspace) -> Result:
        obs = Observation(tuning=ws.tuning is not None, served_before=served_before(ws))
        target = ws.status.target_node_count if ws.status else None
        worker_nodes: list[str] | None = None
        requeue: float | None = None
        problem = self.validator(ws)
        plan: Plan | None = None
        if problem:
            obs.invalid = problem
        else:
            try:
                model = self._resolve_model(ws)
                if isinstance(model, ModelProblem):
                    obs.model_problem, requeue = model, model.retry_in
                elif model is None:
                    plan = self.planner(ws)
                else:  # sized from the checkpoint, pinned to the commit it was read at (its revision)
                    obs.resolved_model = model_record.record(model)
                    plan = plan_for(ws, nodes=self.stores.nodes.list(), preset=model.preset,
                                    sized_from=model.summary)
            except PlanError as exc:
                if exc.waiting:
                    obs.waiting = ("WaitingForNodes", str(exc))
                elif exc.invalid:
                    obs.invalid = str(exc)
                else:
                    obs.plan_error = str(exc)
        if plan is not None and self.options.hf_endpoint:
            plan = replace(plan, hf_endpoint=self.options.hf_endpoint)
        if plan is not None and target:  # set once: later estimates (a changed catalog) do not move it
            plan = plan.with_node_count(target)
        config = self._tuning_config(ws) if plan is not None else ConfigCheck()
        problem: JobState | ConfigProblem | None = config.problem
        if plan is not None and problem is None:
            plan, problem = self._inference_config(ws, plan)
        if problem is not None:
            # no GPU nodes for a workload that cannot start yet; look again (nothing watches ConfigMaps)
            obs.hold_for(problem)
            plan, requeue = None, self.options.config_poll_seconds
        if plan is not None:
            target = plan.node_count
            obs.plan_message = plan.message
            summary = self._ensure_machines(ws, plan)
            obs.machines = summary
            worker_nodes = summary.worker_nodes
            if summary.gave_up and not summary.pending:
                requeue = None  # stopped: a Machine event or an edit of the record wakes it
            elif not summary.all_ready:
                requeue = min(self.options.machine_poll_seconds, summary.relaunch_in or float("inf"))
            elif ws.tuning is not None:
                obs.job = self._ensure_job(ws, plan, config)
            else:
                obs.inference = self._ensure_inference(ws, plan, summary)
                if not obs.inference.ready and not obs.inference.failed:
                    requeue = self.options.inference_poll_seconds
        phases, retry = self._timeline(ws, plan, obs) if plan is not None else (None, False)
        if retry:
            requeue = min(requeue or self.options.first_request_poll_seconds,
                          self.options.first_request_poll_seconds)
        self._write_status(ws, obs, target, worker_nodes, phases)
        return Result(requeue_after=requeue)

    def _resolve_model(self, ws: Workspace) -> ResolvedModel | ModelProblem | None:
        """None for a catalog preset; else the uncatalogued Hugging Face id as the Workspace's status
        recorded it (``model_record``: no hub read, the revision stays pinned), or resolved from its
        checkpoint (``model_resolver``: cached, with backoff), with the token of the Workspace's
        ``modelAccessSecret``. Runs before any Machine: a model that cannot be served buys no GPU."""
        name = ws.inference.preset.name if ws.inference and ws.inference.preset else None
        if name is None or self.model_resolver.catalog.preset(name) is not None:
            return None
        if (kept := model_record.recalled(ws, name)) is not None:
            return kept
        options = ws.inference.preset.preset_options if ws.inference and ws.inference.preset else None
        secret = options.model_access_secret if options else None
        token = self._model_token(secret, ws.namespace) if secret else None
        model, fresh = self.model_resolver.resolve(name, token, secret=secret)
        if fresh and isinstance(model, ResolvedModel):
            self._event(ws, "Normal", REASON_MODEL_RESOLVED, model.summary)
        return model

    def _model_token(self, secret: str, namespace: str | None) -> str | None:
        """HF_TOKEN of the Secret ``modelAccessSecret`` names, in the Workspace's namespace (a GET of
        that one Secret: no informer, so the controller holds no Secret in memory), or None."""
        found = self._get_or_none(SECRETS, secret, namespace)
        value = ((found or {}).get("data") or {}).get(HF_TOKEN_KEY)
        if not value:
            return None
        try:
            return base64.b64decode(value).decode().strip() or None
        except ValueError:
            return None

    def _add_finalizer(self, ws: Workspace) -> dict:
        finalizers = [*(ws.metadata.finalizers or []), names.FINALIZER]
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": ws.metadata.resource_version}}
        return self.client.patch(WORKSPACES, ws.name, patch, namespace=ws.namespace)

    # --- Machines -----------------------------------------------------------------------------------
    def _machines_of(self, ws: Workspace) -> list[dict]:
        return [
            m for m in self.stores.machines.by_index(MACHINE_INDEX, ws.name)
            if (m.get("metadata", {}).get("labels") or {}).get(LABEL_WORKSPACE_NAMESPACE) == ws.namespace
        ]

    def _ensure_machines(self, ws: Workspace, plan: Plan) -> MachineSummary:
        """Existing nodes first (preferredNodes; every matching node in BYO mode), Machines for the rest."""
        # a partition runs on existing nodes only (it names no instance type to provision)
        provisions = self.options.node_provisioner != byo.BYO and ws.resource.partition is None
        existing = byo.usable_nodes(ws, self.stores.nodes.list(), plan.gpus_per_node,
                                    any_matching=not provisions)[: plan.node_count]
        if not provisions:
            hint = (f"Ready nodes with labels {byo.selector_text(ws)} and {plan.gpus_per_node} "
                    f"allocatable {plan.gpu_resource}")
            return summarize_machines([], [], self.node_api).with_existing(
                existing, plan.node_count, provisions=False, wait_hint=hint)
        # Machines that exist stay in use (a preferred node that turns up later must not leave a GPU
        # VM idling, nor one that flaps make Machines come and go): existing nodes fill what is left
        have = sum(1 for m in self._machines_of(ws) if not m["metadata"].get("deletionTimestamp"))
        count = min(plan.node_count, max(plan.node_count - len(existing), have))
        existing = existing[: plan.node_count - count]
        summary = self._ensure_machine_objects(ws, plan, count)
        return summary.with_existing(existing, plan.node_count) if existing else summary

    def _ensure_machine_objects(self, ws: Workspace, plan: Plan, count: int) -> MachineSummary:
        desired = desired_machine_names(ws, count)
        observed = self._machines_of(ws)
        have = {m["metadata"]["name"] for m in observed}
        missing = [n for n in desired if n not in have]
        if missing and not self._still_wanted(ws):
            raise Conflict(409, "Conflict", f"workspace {ws.key} is deleted or replaced; the cache is behind")
        before = summarize_machines(desired, observed, self.node_api)
        record = relaunch.parse(ws.metadata.annotations)
        reasons = (*before.gone_reasons.values(), *before.failures.values())
        dirty = any([record.note_reason(r) for r in reasons])
        if before.all_ready:
            dirty |= record.reset(desired)
        noticed = record.noticed
        decision = relaunch.decide(record, missing, time.time(), self._relaunch_policy())
        dirty |= record.noticed != noticed
        again = {n for n in decision.create if record.launches.get(n, 0) > 0}
        for name in decision.create:
            record.launched(name)
        if dirty or decision.create:
            # counted before the create: a crash in between over-counts by one, never forgets one
            self._store_record(ws, record)
        for name in decision.create:
            created = self._create_machine(ws, plan, desired.index(name), name in again, record)
            if created is not None:
                observed.append(created)
        summary = summarize_machines(desired, observed, self.node_api)
        summary.relaunch_in, summary.gave_up = decision.wait_seconds, decision.gave_up
        return summary

    def _create_machine(self, ws: Workspace, plan: Plan, index: int, again: bool,
                        record: relaunch.LaunchRecord) -> dict | None:
        """Create the ``index``-th Machine (``again``: a re-creation); None if nothing was created."""
        name = desired_machine_names(ws, index + 1)[index]
        machine = build_node_request(self.node_api, ws, index, plan.instance_type, plan.disk_gib)
        try:
            created = self.client.create(self.node_api.kind, machine)
        except AlreadyExists:
            return None  # the cache has not seen our earlier create yet
        except ApiError as exc:
            self._event(ws, "Warning", "MachineCreationFailed", f"creating Machine {name}: {exc.message}")
            return None
        if again:
            self._event(ws, "Warning", "MachineRecreated",
                        f"re-created Machine {name} ({record.failures}/{self.options.relaunch_limit} "
                        f"re-creations in a row; last failure: {record.reason or 'unknown'})")
        else:
            self._event(ws, "Normal", "MachineCreated",
                        f"created Machine {name} ({plan.instance_type}, {index + 1}/{plan.node_count})")
        return created

    def _relaunch_policy(self) -> relaunch.Policy:
        o = self.options
        return relaunch.Policy(o.relaunch_limit, o.relaunch_backoff_seconds, o.relaunch_backoff_max_seconds)

    def _store_record(self, ws: Workspace, record: relaunch.LaunchRecord) -> None:
        """The launch record, durably on the Workspace: a merge patch of one annotation, on the
        resourceVersion this pass read (a pass on a stale cache gets a Conflict and is requeued, so it
        cannot write back an older count); ``ws`` takes the new resourceVersion, so this pass's
        status write does not conflict with our own patch."""
        value = record.dump()
        if (ws.metadata.annotations or {}).get(relaunch.ANNOTATION) == value:
            return
        patch = {"metadata": {"annotations": {relaunch.ANNOTATION: value},
                              "resourceVersion": ws.metadata.resource_version}}
        patched = self.client.patch(WORKSPACES, ws.name, patch, namespace=ws.namespace)
        meta = patched.get("metadata") or {}
        ws.metadata.annotations = meta.get("annotations")
        ws.metadata.resource_version = meta.get("resourceVersion")

    def _still_wanted(self, ws: Workspace) -> bool:
        """An authoritative read before creating Machines: the cached Workspace may be stale.

        Machines are cluster-scoped, so no ownerReference (and no garbage collector) removes them once
        their Workspace is gone. A pass on a cache that lags a deletion (the informer is relisting after
        an API server restart, say) would create a Machine after the finalizer was released: an orphan
        with a real cloud VM behind it (found by tests/chaos/test_chaos_apiserver.py). Passes of one key
        never overlap, so once this read shows the same live, undeleted Workspace, its finalizer (and
        with it the Machine cleanup) is still ahead.
        """
        try:
            live = self.client.get(WORKSPACES, ws.name, ws.namespace)
        except NotFound:
            return False
        meta = live.get("metadata") or {}
        return meta.get("uid") == ws.metadata.uid and not meta.get("deletionTimestamp")

    # --- inference ----------------------------------------------------------------------------------
    def _ensure_inference(self, ws: Workspace, plan: Plan, nodes: MachineSummary | None = None
                          ) -> InferenceState:
        try:
            serve_config = self.serve_config(ws, plan)
        except Exception as exc:  # the builder rejected our inputs: say so, do not crash-loop
            log.exception("workspace %s: building the serve config failed", ws.key)
            return InferenceState(False, "ServeConfigFailed", f"building the Ray Serve config failed: {exc}",
                                  failed=True)
        desired = build_rayservice(ws, plan, serve_config, self.options.serve_image,
                                   ray_token_auth=self.options.ray_token_auth,
                                   serve_haproxy=self.options.serve_haproxy)
        if nodes is not None and nodes.existing_nodes:  # nodes we did not label: pinned by name
            desired = byo.pin_to_nodes(desired, ws, nodes.worker_nodes)
        try:
            rs = self._create_or_update(RAYSERVICES, self.stores.rayservices, desired, ws)
            self._replace_stale_clusters(ws, rs)
            service = build_service(ws, allow_load_balancer=self.options.allow_load_balancer,
                                    default_source_ranges=self.options.load_balancer_source_ranges)
            if wants_load_balancer(ws) and service["spec"]["type"] != "LoadBalancer":
                self._event(ws, "Warning", "LoadBalancerNotAllowed",
                            "kaito.sh/enablelb is ignored: the operator does not allow LoadBalancer "
                            "Services (--allow-load-balancer), or kaito.sh/loadbalancer-source-ranges "
                            "is not a comma-separated list of CIDRs")
            self._create_or_update(SERVICES, self.stores.services, service, ws,
                                   merge_spec=merged_service_spec)
            if self.stores.network_policies is not None:
                policy = build_network_policy(ws, pod_labels(ws))
                self._create_or_update(NETWORKPOLICIES, self.stores.network_policies, policy, ws)
        except Invalid as exc:  # the API server rejected what we built: retrying will not help
            return InferenceState(False, "RayServiceInvalid", f"the API server rejected the RayService or "
                                  f"Service: {exc.message}", failed=True)
        return diagnosis.explain(rayservice_state(rs), rs, self._ray_pods(ws))

    def _ray_pods(self, ws: Workspace) -> list[dict]:
        return [p for p in self.stores.pods.by_index(POD_INDEX, ws.name)
                if p.get("metadata", {}).get("namespace") == ws.namespace]

    def _replace_stale_clusters(self, ws: Workspace, rs: dict | None) -> None:
        """Delete the RayClusters made from an earlier cluster spec: KubeRay makes a new one in
        their place on the same nodes (``cluster_rollout``; a second beside them would never
        schedule). A GET per cluster the status names: no informer caches the cluster's pods'
        specs for this one comparison."""
        for name in cluster_rollout.cluster_names(rs):
            cluster = self._get_or_none(RAYCLUSTERS, name, ws.namespace)
            if cluster is not None and rs is not None and cluster_rollout.is_stale(cluster, rs):
                self.client.delete(RAYCLUSTERS, name, ws.namespace)
                self._event(ws, "Normal", "RayClusterReplaced",
                            f"deleted RayCluster {name}: its spec is an earlier one; KubeRay makes the "
                            "new one on the same nodes")

    def _job_of(self, ws: Workspace) -> dict | None:
        return self.stores.jobs.get(f"{ws.namespace}/{names.tuning_job_name(ws.name)}")

    def _ensure_job(self, ws: Workspace, plan: Plan, config: ConfigCheck) -> JobState:
        existing = self._job_of(ws)
        if existing is not None:  # its config was checked when it was created; its template is immutable
            return job_state(existing)
        job = build_tuning_job(ws, plan, self.options.tuning_image, config.output_dir,
                               config.deadline_seconds)
        # A Job's pod template is immutable: create it once; a changed spec needs a new workspace.
        return job_state(self._create_or_update(JOBS, self.stores.jobs, job, ws, create_only=True))

    def _tuning_config(self, ws: Workspace) -> ConfigCheck:
        """The ConfigMap tuning.config names, read (a GET: nothing else reads ConfigMaps, so no
        informer) and checked once per pass, before any Machine is created: a missing or invalid
        one keeps the Machines back, since GPU nodes would only idle until it is fixed; a valid
        one gives the Job its output directory."""
        if ws.tuning is None or not ws.tuning.config or self._job_of(ws) is not None:
            # (once the Job exists: a retried pod reads the live, maybe edited, ConfigMap, which
            # the trainer checks with the same parser)
            return ConfigCheck()
        return check_training_config(ws, self._get_or_none(CONFIGMAPS, ws.tuning.config, ws.namespace))

    def _inference_config(self, ws: Workspace, plan: Plan) -> tuple[Plan, ConfigProblem | None]:
        """``inference.config`` read (a GET, as for tuning.config) and checked on every pass, before
        any Machine: the Plan then carries the settings to the serve config."""
        if ws.inference is None or not ws.inference.config:
            return plan, None
        configmap = self._get_or_none(CONFIGMAPS, ws.inference.config, ws.namespace)
        return check_inference_config(ws, configmap, plan)

    def _create_or_update(self, kind: ResourceKind, store: Store, desired: dict, owner: Workspace,
                          create_only: bool = False,
                          merge_spec: Callable[[dict, dict], dict] | None = None) -> dict | None:
        """Create ``desired`` or, when its spec hash changed, replace the existing object's spec
        (``merge_spec(existing, desired)`` when the server owns fields of the spec too; never
        for ``create_only`` kinds, such as a Job whose template is immutable)."""
        meta = desired["metadata"]
        spec_hash = _hash(desired.get("spec"))
        meta.setdefault("annotations", {})[ANNOTATION_SPEC_HASH] = spec_hash
        key = f"{meta['namespace']}/{meta['name']}"
        existing = store.get(key)
        if existing is None:
            try:
                created = self.client.create(kind, desired)
            except AlreadyExists:
                return self._get_or_none(kind, meta["name"], meta["namespace"])
            self._event(owner, "Normal", f"{kind.kind}Created", f"created {kind.kind} {meta['name']}")
            return created
        old_hash = (existing["metadata"].get("annotations") or {}).get(ANNOTATION_SPEC_HASH)
        if create_only or old_hash == spec_hash:
            return existing
        updated = copy.deepcopy(existing)
        spec = desired["spec"]
        updated["spec"] = merge_spec(updated.get("spec") or {}, spec) if merge_spec else spec
        updated["metadata"].setdefault("annotations", {}).update(meta.get("annotations") or {})
        updated["metadata"].setdefault("labels", {}).update(meta.get("labels") or {})
        result = self.client.update(kind, updated)  # Conflict propagates -> requeue
        self._event(owner, "Normal", f"{kind.kind}Updated", f"updated {kind.kind} {meta['name']}")
        return result

    def _get_or_none(self, kind: ResourceKind, name: str, namespace: str | None) -> dict | None:
        try:
            return self.client.get(kind, name, namespace)
        except NotFound:
            return None

    # --- the cold-start timeline -------------------------------------------------------------------
    def _timeline(self, ws: Workspace, plan: Plan, obs: Observation) -> tuple[list[PhaseEnd] | None, bool]:
        """``status.timeline`` with the phases that ended by now (controller/workspace/timeline.py),
        or None when there is nothing to add; and whether to look again soon (the first request
        was not answered yet)."""
        recorded = list(ws.status.timeline or []) if ws.status else []
        phases = TUNING_PHASES if ws.tuning is not None else INFERENCE_PHASES
        complete = {p.phase for p in recorded} >= set(phases)
        if (not recorded and served_before(ws)) or (complete and ws.inference is None):
            return None, False  # served before we kept timelines (its start is unknown), or complete
        now = datetime.now(UTC)
        seen = {} if complete else timeline.machine_ends(self._machines_of(ws), plan.node_count)
        retry = False
        rs = None
        if ws.inference is not None:
            rs = self.stores.rayservices.get(f"{ws.namespace}/{names.rayservice_name(ws.name)}")
            seen.update(timeline.rayservice_ends(rs, now))
            loaded = timeline.ended(recorded, PHASE_WEIGHTS_LOADED) or seen.get(PHASE_WEIGHTS_LOADED)
            window = self.options.first_request_window_seconds
            if (not complete and loaded is not None and obs.inference is not None and obs.inference.ready
                    and (now - loaded).total_seconds() < window):
                url = probe.endpoint(self.options.first_request_url, ws.name, ws.namespace or "", rs)
                if url is not None and self.prober(url, plan.model_name):
                    seen[PHASE_FIRST_REQUEST_ANSWERED] = datetime.now(UTC)
                else:
                    retry = url is not None or self.options.first_request_url == "rayservice-status"
        created = timeline.parse_time(ws.metadata.creation_timestamp)
        updated = recorded if complete else timeline.advance(recorded, seen, phases, created)
        if ws.inference is not None:  # after the cold start: the latest restart of the deployments
            updated = timeline.restarts(updated, *timeline.serving(rs, now))
        return (updated if updated != recorded else None), retry

    # --- status -------------------------------------------------------------------------------------
    def _write_status(self, ws: Workspace, obs: Observation, target: int | None,
                      worker_nodes: list[str] | None, phases: list[PhaseEnd] | None = None) -> None:
        before = {c.type: (c.status, c.reason) for c in (ws.status.conditions if ws.status else None) or []}
        recorded = list(ws.status.timeline or []) if ws.status else []
        changed = apply_observation(ws, obs, target, worker_nodes)
        if phases is not None:
            ws.ensure_status().timeline = phases
            changed = True
        if changed:
            self.client.update_status(WORKSPACES, ws.to_k8s())  # Conflict propagates -> requeue
            metrics.observe_phases(ws, timeline.new_phases(recorded, phases))
            self._condition_events(ws, before)
            was_ready = before.get(CONDITION_WORKSPACE_READY, ("False", ""))[0] == "True"
            if ws.is_condition_true(CONDITION_WORKSPACE_READY) and not was_ready:
                metrics.observe_ready_transition(ws)

    def _condition_events(self, ws: Workspace, before: dict[str, tuple[str, str]]) -> None:
        for cond in (ws.status.conditions if ws.status else None) or []:
            if before.get(cond.type) == (cond.status, cond.reason):
                continue
            type_ = "Warning" if cond.reason in WARNING_REASONS else "Normal"
            self._event(ws, type_, cond.reason, f"{cond.type}={cond.status}: {cond.message}")

    # --- deletion -----------------------------------------------------------------------------------
    def _finalize(self, ws: Workspace) -> Result:
        """Delete the workspace's Machines, wait until they are gone, then drop the finalizer."""
        if names.FINALIZER not in (ws.metadata.finalizers or []):
            return Result()
        selector = names.owner_selector(ws.namespace or "", ws.name)
        machines: list[dict] = []
        if self.options.node_provisioner != byo.BYO:  # BYO: nothing was provisioned, nothing to delete
            machines, _ = self.client.list(self.node_api.kind, label_selector=selector)  # not the cache
        remaining = []
        for m in machines:
            name = m["metadata"]["name"]
            remaining.append(name)
            if not m["metadata"].get("deletionTimestamp") and self.client.delete(self.node_api.kind, name):
                self._event(ws, "Normal", "MachineDeleted", f"deleting Machine {name}")
        if remaining:
            msg = f"waiting for {len(remaining)} machine(s) to be deleted: {', '.join(sorted(remaining))}"
            if ws.set_condition(CONDITION_WORKSPACE_DELETING, "True", "DeletingMachines", msg):
                with contextlib.suppress(Conflict, NotFound):  # cosmetic; the next pass writes it
                    self.client.update_status(WORKSPACES, ws.to_k8s())
            return Result(requeue_after=self.options.deletion_poll_seconds)
        finalizers = [f for f in ws.metadata.finalizers or [] if f != names.FINALIZER]
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": ws.metadata.resource_version}}
        with contextlib.suppress(NotFound):
            self.client.patch(WORKSPACES, ws.name, patch, namespace=ws.namespace)
        self._event(ws, "Normal", "WorkspaceDeleted", "machines deleted; finalizer removed")
        return Result()

    # --- helpers ------------------------------------------------------------------------------------
    def _event(self, ws: Workspace, type_: str, reason: str, message: str) -> None:
        if self.recorder is not None:
            self.recorder.event(reference(ws), type_, reason, message)
