"""The serving side of an inference workspace: its RayService, its Service, and their state.

Pure builders: given the Workspace, its Plan and the serve config text, return the manifests.
The Ray head and the GPU worker group are pinned to the workspace's own nodes (the Machine labels
are copied onto the Nodes) and tolerate the ``sku=gpu`` taint that keeps everyone else off them.
One worker pod per node holds all the node's GPUs; Ray Serve's placement groups then give each
model replica the GPUs it needs inside that pool.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from controller.api.rayservice import (
    APP_DEPLOY_FAILED,
    APP_DEPLOYING,
    APP_NOT_STARTED,
    APP_RUNNING,
    APP_UNHEALTHY,
    CONDITION_READY,
    AppStatus,
    RayService,
)
from controller.api.workspace import (
    ANNOTATION_ENABLE_LB,
    ANNOTATION_LB_SOURCE_RANGES,
    API_KEY_SECRET_KEY,
    AdapterSpec,
    DataSource,
    Workspace,
)
from controller.workspace import (
    byo,
    cluster_rollout,
    model_cache,
    names,
    podsecurity,
    ray_auth,
    ray_resources,
)
from controller.workspace.plan import Plan
from controller.workspace.volumes import PodData
from rayserve.spec import CLUSTER_ENV, HAPROXY_ENV

GPU_RESOURCE = "nvidia.com/gpu"
ADAPTER_DIR = "/mnt/adapter"
# What the head publishes (its containerPorts, which KubeRay turns into the head Service's
# ports; with none declared it would add the Ray Client's 10001 too): GCS for the workers to join,
# the dashboard for KubeRay's serve-config PUTs and status polls, Serve for clients, and metrics
# for Prometheus (KubeRay adds that one anyway). Nothing here uses Ray Client, so its server is
# not started at all (``ray-client-server-port: 0``).
HEAD_PORTS = (("gcs-server", 6379), ("dashboard", 8265), ("serve", names.SERVE_PORT), ("metrics", 8080))
HEAD_START_PARAMS = {"num-gpus": "0", "dashboard-host": "0.0.0.0", "ray-client-server-port": "0"}
WORKER_GROUP = "gpu-group"


def pod_pinning(ws: Workspace) -> dict:
    """nodeSelector + tolerations that put a pod on this workspace's GPU nodes and only there."""
    selector = {
        **(ws.resource.label_selector.match_labels or {}),
        **names.owner_labels(ws.namespace or "", ws.name),
    }
    return {
        "nodeSelector": selector,
        "tolerations": [
            {"key": names.GPU_TAINT_KEY, "operator": "Equal", "value": names.GPU_TAINT_VALUE,
             "effect": names.GPU_TAINT_EFFECT},
            {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
            # a MIG slice's resource, should the cluster taint MIG nodes with it (as Kaito tolerates)
            *([{"key": byo.partition_resource(ws), "operator": "Exists", "effect": "NoSchedule"}]
              if byo.partition_resource(ws) != GPU_RESOURCE else []),
        ],
    }


def pod_labels(ws: Workspace) -> dict[str, str]:
    return {names.LABEL_WORKSPACE: ws.name}


def adapter_path(adapter: AdapterSpec) -> str:
    return f"{ADAPTER_DIR}/{adapter.source.name}"


def _adapter_volumes(ws: Workspace) -> PodData:
    """What puts each adapter at /mnt/adapter/<name> (``volumes.PodData``: image adapters are
    copied out of their image by ``puller-<i>``, volume adapters mounted, ``path`` adapters are a
    directory on the node)."""
    data = PodData()
    for i, adapter in enumerate((ws.inference.adapters if ws.inference else None) or []):
        data.add_source(adapter.source, f"adapter-{i}", adapter_path(adapter), f"puller-{i}",
                        pull_dir=ADAPTER_DIR)
    return data


API_KEY_ENV = "KAITO_API_KEY"  # what rayserve.auth reads (the serve config names it)


def api_key_env(ws: Workspace) -> str | None:
    """The environment variable the serve app reads its API key from, if the workspace has one."""
    return API_KEY_ENV if ws.inference is not None and ws.inference.api_key_secret else None


def pull_secrets(sources: Iterable[DataSource]) -> list[dict]:
    """The pod's imagePullSecrets for the images of ``sources``, each Secret once, in order."""
    names_seen: dict[str, None] = {}
    for src in sources:
        if src.image:
            names_seen.update(dict.fromkeys(src.image_pull_secrets or []))
    return [{"name": n} for n in names_seen]


def serve_env(haproxy: bool = False) -> list[dict]:
    """Ray Serve's cluster-wide settings (``rayserve.spec.CLUSTER_ENV``: its HTTP proxy routes on
    its own event loop; with ``haproxy``, ``HAPROXY_ENV``: HAProxy in front of replicas that serve
    HTTP themselves), in every Ray container, since the proxy reads them from the raylet's env."""
    env = {**CLUSTER_ENV, **(HAPROXY_ENV if haproxy else {})}
    return [{"name": k, "value": v} for k, v in sorted(env.items())]


def _env(ws: Workspace) -> list[dict]:
    env: list[dict] = []
    if api_key_env(ws) and ws.inference is not None:
        # not optional: a missing Secret keeps the pod from starting instead of serving openly
        env.append({"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": {
            "name": ws.inference.api_key_secret, "key": API_KEY_SECRET_KEY}}})
    preset = ws.inference.preset if ws.inference else None
    secret = preset.preset_options.model_access_secret if preset and preset.preset_options else None
    if secret:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "HF_TOKEN",
                                                                       "optional": True}}})
    return env


def hub_env(plan: Plan) -> list[dict]:
    """The operator's HF_ENDPOINT (a mirror, or the tests' fake hub), so the serve pods download
    from where the controller read the model's config.json; nothing for the Hub itself."""
    return [{"name": "HF_ENDPOINT", "value": plan.hf_endpoint}] if plan.hf_endpoint else []


def _pod_template(ws: Workspace, container: dict, extra_spec: dict | None = None) -> dict:
    """A Ray pod: pinned to the workspace's nodes, without a service account token (in-tree
    autoscaling is off, so nothing in a Ray pod calls the API server, and the adapters and models
    it loads are the Workspace author's choice), and under ``podsecurity``'s defaults in every
    container: the image's ray user, no capabilities, no privilege escalation, RuntimeDefault
    seccomp (KubeRay copies the Ray container's securityContext into the init container it adds).
    ``fsGroupChangePolicy: OnRootMismatch``: a large adapter volume is not re-chowned every start."""
    spec = {**pod_pinning(ws), "automountServiceAccountToken": False, "containers": [container],
            "securityContext": {"fsGroupChangePolicy": "OnRootMismatch"}, **(extra_spec or {})}
    return {"metadata": {"labels": pod_labels(ws)}, "spec": podsecurity.restricted_pod(spec)}


def build_rayservice(ws: Workspace, plan: Plan, serve_config_v2: str, image: str, *,
                     ray_token_auth: bool = True, serve_haproxy: bool = False) -> dict:
    """The RayService: a CPU-only head and one GPU worker per node, running ``serve_config_v2``.

    Both keep the Hugging Face cache on a volume of the node (``model_cache``), so a restarted
    container finds the weights it downloaded. ``ray_token_auth``: KubeRay turns on Ray's token
    authentication and keeps the token (``ray_auth``). ``serve_haproxy``: Serve's HAProxy ingress
    (``rayserve.spec.HAPROXY_ENV``) in place of its Python proxy."""
    env = [*_env(ws), *model_cache.env(), *hub_env(plan), *serve_env(serve_haproxy)]
    head = {
        "name": "ray-head",
        "image": image,
        "ports": [{"name": n, "containerPort": p} for n, p in HEAD_PORTS],
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
        "env": env,
        "volumeMounts": [model_cache.mount()],
    }
    adapters = _adapter_volumes(ws)
    volumes = [*adapters.volumes, model_cache.volume(plan)]
    cache_owner = model_cache.cache_owner(plan, image)  # first: before anything writes the cache
    mounts, inits = [*adapters.mounts, model_cache.mount()], [*cache_owner, *adapters.inits]
    worker: dict = {
        "name": "ray-worker",
        "image": image,
        "resources": {
            "requests": {"cpu": str(ray_resources.worker_node_cpus(plan)), "memory": "2Gi"},
            **({"limits": {plan.gpu_resource: str(plan.gpus_per_node)}} if plan.gpus_per_node else {}),
        },
        "env": env,
        "volumeMounts": mounts,
    }
    # One worker per node: workers of this group repel each other on the hostname topology.
    anti_affinity = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchLabels": {**pod_labels(ws), "ray.io/group": WORKER_GROUP}},
        "topologyKey": "kubernetes.io/hostname",
    }]}}
    worker_extra: dict = {"affinity": anti_affinity}
    if volumes:
        worker_extra["volumes"] = volumes
    if inits:
        worker_extra["initContainers"] = inits
    pull = pull_secrets(a.source for a in (ws.inference.adapters if ws.inference else None) or [])
    if pull:  # the adapter images' registries (the pullers run in the worker pods)
        worker_extra["imagePullSecrets"] = pull
    cluster = {
        **ray_auth.cluster_fields(ray_token_auth),
        "enableInTreeAutoscaling": False,
        "headGroupSpec": {
            "rayStartParams": dict(HEAD_START_PARAMS),
            "template": _pod_template(ws, head, {"volumes": [model_cache.volume(plan)],
                                                 **({"initContainers": cache_owner} if cache_owner else {})}),
        },
        "workerGroupSpecs": [{
            "groupName": WORKER_GROUP,
            "replicas": plan.node_count,
            "minReplicas": plan.node_count,
            "maxReplicas": plan.node_count,
            "rayStartParams": {"num-gpus": str(plan.gpus_per_node)},
            "template": _pod_template(ws, worker, worker_extra),
        }],
    }
    rs = RayService.model_validate({
        "metadata": {
            "name": names.rayservice_name(ws.name),
            "namespace": ws.namespace,
            "labels": pod_labels(ws),
            "annotations": {cluster_rollout.ANNOTATION_CLUSTER_HASH: cluster_rollout.cluster_hash(cluster)},
            "ownerReferences": [ws.owner_reference().to_k8s()],
        },
        "spec": {
            "serveConfigV2": serve_config_v2,
            # fixed nodes hold one cluster: never a second one beside it (cluster_rollout.py)
            "upgradeStrategy": dict(cluster_rollout.UPGRADE_STRATEGY),
            "rayClusterConfig": cluster,
        },
    })
    return rs.to_k8s()


def source_ranges(ws: Workspace) -> list[str] | None:
    """The CIDRs of ``kaito.sh/loadbalancer-source-ranges`` (normalised), [] when unset, None when
    any entry is not a CIDR (then no LoadBalancer at all: a typo must not open it to everyone)."""
    raw = (ws.metadata.annotations or {}).get(ANNOTATION_LB_SOURCE_RANGES, "")
    ranges = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            ranges.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            return None
    return ranges


def wants_load_balancer(ws: Workspace) -> bool:
    return (ws.metadata.annotations or {}).get(ANNOTATION_ENABLE_LB, "").strip().lower() == "true"


def build_service(ws: Workspace, serve_port: int = names.SERVE_PORT, *, allow_load_balancer: bool = False,
                  default_source_ranges: tuple[str, ...] = ()) -> dict:
    """``<ws>``: port 80 to the Ray Serve HTTP proxy on the workspace's Ray pods.

    ClusterIP, or LoadBalancer when the workspace has Kaito's ``kaito.sh/enablelb: "True"`` and
    the operator allows it (``--allow-load-balancer``: a Workspace author alone must not be able to
    publish a model to the internet). A LoadBalancer admits the annotation's
    ``kaito.sh/loadbalancer-source-ranges``, else the operator's defaults; unparsable ranges mean
    ClusterIP.
    """
    ranges = source_ranges(ws)
    lb = wants_load_balancer(ws) and allow_load_balancer and ranges is not None
    spec: dict = {
        "type": "LoadBalancer" if lb else "ClusterIP",
        "selector": pod_labels(ws),
        "ports": [{"name": "http", "port": names.SERVICE_PORT, "targetPort": serve_port, "protocol": "TCP"}],
    }
    if lb and (ranges or default_source_ranges):
        spec["loadBalancerSourceRanges"] = ranges or list(default_source_ranges)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": names.service_name(ws.name),
            "namespace": ws.namespace,
            "labels": pod_labels(ws),
            "ownerReferences": [ws.owner_reference().to_k8s()],
        },
        "spec": spec,
    }


# Service spec fields that only a LoadBalancer (or NodePort) Service may carry; the API server
# rejects a ClusterIP Service that keeps them
_EXTERNAL_ONLY = ("externalTrafficPolicy", "allocateLoadBalancerNodePorts", "healthCheckNodePort",
                  "loadBalancerClass", "loadBalancerIP", "loadBalancerSourceRanges")


def merged_service_spec(existing: dict, desired: dict) -> dict:
    """Our fields over the stored spec: the server's own (clusterIP, ipFamilies, ...) are kept, so
    an update is accepted; switching to ClusterIP (``kaito.sh/enablelb`` removed) drops the
    fields only an externally reachable Service may have."""
    spec = {**existing, **desired}
    if desired.get("type") == "ClusterIP":
        for field in _EXTERNAL_ONLY:
            spec.pop(field, None)
    return spec


@dataclass(frozen=True)
class InferenceState:
    """InferenceReady as read from the RayService: status, reason and a message."""

    ready: bool
    reason: str
    message: str
    failed: bool = False


# Ready=False reasons after which KubeRay will not recover by itself (the spec must change).
TERMINAL_REASONS = frozenset({"ValidationFailed", "InitializingTimeout"})


def _apps(rs: RayService) -> tuple[dict[str, AppStatus], dict[str, AppStatus]]:
    """(active, pending) application statuses; KubeRay reports a first deploy under pending."""
    st = rs.status
    active = st.active_service_status if st else None
    pending = st.pending_service_status if st else None
    return ((active.application_statuses or {}) if active else {},
            (pending.application_statuses or {}) if pending else {})


def rayservice_state(obj: dict | None) -> InferenceState:
    """Ready when KubeRay's Ready condition is True (or every active Serve app is RUNNING)."""
    if obj is None:
        return InferenceState(False, "RayServiceNotFound", "waiting for the RayService to be created")
    rs = RayService.model_validate(obj)
    active, pending = _apps(rs)
    failed = {n: a.message or a.status or "" for n, a in {**pending, **active}.items()
              if a.status in (APP_DEPLOY_FAILED, APP_UNHEALTHY)}
    if failed:
        detail = "; ".join(f"{app}: {msg}" for app, msg in sorted(failed.items()))
        return InferenceState(False, "ServeApplicationFailed", f"Ray Serve application failed: {detail}",
                              failed=True)
    cond = rs.condition(CONDITION_READY)
    if cond is not None and cond.status != "True" and cond.reason in TERMINAL_REASONS:
        return InferenceState(False, cond.reason, f"RayService {rs.name}: {cond.message or cond.reason}",
                              failed=True)
    observed = rs.status.observed_generation if rs.status else None
    if observed is not None and rs.metadata.generation and observed < rs.metadata.generation:
        return InferenceState(False, "RayServiceUpdating",
                              f"waiting for KubeRay to apply generation {rs.metadata.generation} of "
                              f"RayService {rs.name} (status is of generation {observed})")
    running = bool(active) and all(a.status == APP_RUNNING for a in active.values())
    if rs.is_ready or running:
        return InferenceState(True, "InferenceReady",
                              f"RayService {rs.name} is ready; Ray Serve applications running: "
                              f"{', '.join(sorted(active)) or 'all'}")
    apps = active or pending
    if apps:
        waiting = ", ".join(f"{n}={a.status}" for n, a in sorted(apps.items()) if a.status != APP_RUNNING)
        deploying = any(a.status in (APP_DEPLOYING, APP_NOT_STARTED) for a in apps.values())
        reason = "ServeDeploying" if deploying else "ServeNotReady"
        return InferenceState(False, reason, f"waiting for Ray Serve applications: {waiting or 'proxy'}")
    if cond is not None:
        return InferenceState(False, cond.reason or "RayServiceNotReady",
                              f"waiting for RayService {rs.name}: {cond.message or cond.reason}")
    return InferenceState(False, "RayServiceNotReady",
                          f"waiting for KubeRay to start the Ray cluster of RayService {rs.name}")
