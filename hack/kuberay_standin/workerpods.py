"""The worker Pods KubeRay would create for a RayService, as the Ray nodes the stand-in starts.

Why pure: which Ray nodes should exist is a function of the RayServices and the Nodes in the
caches, so the stand-in can compare it with what runs on every reconcile (level-triggered) and a
unit test can check KubeRay's rules without Ray. The rules follow KubeRay's pod builder
(ray-operator/controllers/ray/common/pod.go) where a Ray node's resources come from:

* ``replicas`` of each worker group, clamped to ``[minReplicas, maxReplicas]`` (KubeRay without
  the autoscaler); ``numOfHosts`` Pods per replica (multi-host groups).
* ``--num-cpus``: ``rayStartParams["num-cpus"]``, else the Ray container's CPU limit, else its
  request, rounded up to whole CPUs; ``--num-gpus``: ``rayStartParams["num-gpus"]``, else its
  ``nvidia.com/gpu`` limit; ``--resources``: ``rayStartParams["resources"]`` (JSON).
* the Kubernetes node a Pod lands on: the Nodes its ``nodeSelector`` matches, in name order, one
  Pod per Node when the template has the hostname anti-affinity the workspace controller sets
  (``controller.workspace.inference``), else round-robin. A Pod no Node matches stays Pending (no
  Ray node), as the scheduler would leave it.

Each Ray node carries labels naming its Pod and its Kubernetes node, so a placement can be read
back as "which Kubernetes node ran this actor" (Ray's state API lists node labels).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
LABEL_POD = "kaito-standin/pod"  # Ray node label: the worker Pod it stands for
LABEL_K8S_NODE = "kubernetes.io/hostname"  # Ray node label: the Kubernetes node the Pod is on
HOSTNAME_TOPOLOGY = "kubernetes.io/hostname"
MAX_LABEL_VALUE = 63  # Ray validates label values as Kubernetes does


@dataclass(frozen=True)
class WorkerPod:
    """One worker Pod of a RayService's cluster, as a Ray worker node to run."""

    rayservice: str  # namespace/name
    pod: str  # the Pod's name (KubeRay's <cluster>-<group>-worker-<suffix>, ours deterministic)
    group: str
    node: str | None  # the Kubernetes node it is scheduled to; None: Pending (nothing matches)
    num_cpus: int
    num_gpus: int
    resources: tuple[tuple[str, float], ...] = field(default=())

    @property
    def labels(self) -> dict[str, str]:
        out = {LABEL_POD: label_value(self.pod)}
        if self.node:
            out[LABEL_K8S_NODE] = label_value(self.node)
        return out


def label_value(text: str) -> str:
    """``text`` if it is a valid label value length, else a stable shortening of it."""
    if len(text) <= MAX_LABEL_VALUE:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[: MAX_LABEL_VALUE - 9]}-{digest}"


def cluster_name(rayservice_name: str) -> str:
    """The RayCluster name the stand-in reports (``rayClusterName``)."""
    return f"{rayservice_name}-standin"


def _quantity_ceil(text: Any) -> int | None:
    """A CPU quantity ("500m", "1", "2.5") rounded up to whole CPUs; None when unset or odd."""
    if text is None:
        return None
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 1000 if raw.endswith("m") else float(raw)
    except ValueError:
        return None
    return math.ceil(value - 1e-9)


def _ray_container(template: dict) -> dict:
    containers = ((template.get("spec") or {}).get("containers")) or [{}]
    return containers[0] or {}


def _num_cpus(params: dict[str, str], container: dict) -> int:
    if "num-cpus" in params:
        return _quantity_ceil(params["num-cpus"]) or 0
    resources = container.get("resources") or {}
    for source in (resources.get("limits") or {}, resources.get("requests") or {}):
        cpus = _quantity_ceil(source.get("cpu"))
        if cpus is not None:
            return cpus
    return 1  # KubeRay leaves it to Ray, which counts the Pod's CPUs: at least one


def _num_gpus(params: dict[str, str], container: dict) -> int:
    if "num-gpus" in params:
        return _quantity_ceil(params["num-gpus"]) or 0
    limits = (container.get("resources") or {}).get("limits") or {}
    return _quantity_ceil(limits.get(GPU_RESOURCE)) or 0


def _custom_resources(params: dict[str, str]) -> tuple[tuple[str, float], ...]:
    raw = params.get("resources")
    if not raw:
        return ()
    text = raw.strip()
    if text.startswith(("'", '"')) and text.endswith(text[0]):
        text = text[1:-1].replace('\\"', '"')  # KubeRay's examples quote the JSON for the shell
    try:
        parsed = json.loads(text)
    except ValueError:
        return ()
    if not isinstance(parsed, dict):
        return ()
    return tuple(sorted((str(k), float(v)) for k, v in parsed.items() if isinstance(v, int | float)))


def _one_per_node(template: dict) -> bool:
    """The template asks for at most one Pod of its group per node (required hostname anti-affinity)."""
    anti = ((template.get("spec") or {}).get("affinity") or {}).get("podAntiAffinity") or {}
    return any(
        term.get("topologyKey") == HOSTNAME_TOPOLOGY
        for term in anti.get("requiredDuringSchedulingIgnoredDuringExecution") or []
    )


def _matching_nodes(template: dict, nodes: Iterable[dict]) -> list[str]:
    selector = (template.get("spec") or {}).get("nodeSelector") or {}
    names = []
    for node in nodes:
        meta = node.get("metadata") or {}
        labels = meta.get("labels") or {}
        if all(labels.get(k) == v for k, v in selector.items()):
            names.append(meta.get("name", ""))
    return sorted(n for n in names if n)


def worker_pods(rayservice: dict, nodes: Iterable[dict]) -> list[WorkerPod]:
    """The worker Pods KubeRay would create for ``rayservice``, each on the node it would land on."""
    meta = rayservice.get("metadata") or {}
    key = f"{meta.get('namespace')}/{meta.get('name')}"
    cluster = ((rayservice.get("spec") or {}).get("rayClusterConfig")) or {}
    node_list = list(nodes)
    pods: list[WorkerPod] = []
    for group in cluster.get("workerGroupSpecs") or []:
        name = group.get("groupName") or "workers"
        replicas = int(
            group.get("replicas") if group.get("replicas") is not None else group.get("minReplicas") or 0
        )
        replicas = max(int(group.get("minReplicas") or 0), replicas)
        if group.get("maxReplicas") is not None:
            replicas = min(int(group["maxReplicas"]), replicas)
        count = replicas * int(group.get("numOfHosts") or 1)
        template = group.get("template") or {}
        params = {k: str(v) for k, v in (group.get("rayStartParams") or {}).items()}
        container = _ray_container(template)
        candidates = _matching_nodes(template, node_list)
        one_per_node = _one_per_node(template)
        for i in range(count):
            if not candidates or (one_per_node and i >= len(candidates)):
                node = None
            else:
                node = candidates[i % len(candidates)]
            pods.append(
                WorkerPod(
                    rayservice=key,
                    pod=f"{cluster_name(meta.get('name', ''))}-{name}-worker-{i}",
                    group=name,
                    node=node,
                    num_cpus=_num_cpus(params, container),
                    num_gpus=_num_gpus(params, container),
                    resources=_custom_resources(params),
                )
            )
    return pods
