"""Failures a person can act on, on a real kube-apiserver: the Ray pods' reasons (as the kubelet and
the scheduler write them) and Ray Serve's deployment message (as KubeRay copies it into the
RayService) shown in the Workspace's InferenceReady condition and as Warning Events.

No kubelet runs here, so the test plays it: it creates Pods labelled as KubeRay labels the pods of
our RayService's cluster and writes their status subresource, as the kubelet would.
"""

from __future__ import annotations

import time

import pytest
from ws_it_helpers import (
    conditions,
    events_for,
    machines_of,
    running_controller,
    set_machine_status,
    wait_for,
    workspace_manifest,
)

from controller.api.kinds import RAYSERVICES, WORKSPACES
from controller.runtime import Client
from controller.runtime.kinds import PODS
from controller.workspace import names

pytestmark = pytest.mark.integration

SCHEDULER = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available."
SERVE = ("Deployment 'LLMServer' in application 'llm' has 1 replicas that have taken more than 30s to be "
         "scheduled. Resources required for each replica: {\"CPU\": 1, \"GPU\": 1}, total resources "
         "available: {\"CPU\": 1.5}.")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _ray_pod(client: Client, ns: str, ws: str, cluster: str, node_type: str, container: str) -> str:
    name = f"{cluster}-{node_type}-x1"
    client.create(PODS, {"metadata": {"name": name, "namespace": ns, "labels": {
        names.LABEL_WORKSPACE: ws, "ray.io/node-type": node_type, "ray.io/cluster": cluster}},
        "spec": {"containers": [{"name": container, "image": "ghcr.io/kaito-py/rayserve:0.1.0"}]}}, ns)
    return name


def _set_pod_status(client: Client, ns: str, pod: str, status: dict) -> None:
    """Play the kubelet (or the scheduler): replace the pod's status."""
    live = client.get(PODS, pod, ns)
    live["status"] = {"phase": "Pending", **status}
    client.update_status(PODS, live)


def _waiting(container: str, reason: str, message: str, last: dict | None = None) -> dict:
    cs = {"name": container, "ready": False, "restartCount": 3, "image": "img", "imageID": "",
          "state": {"waiting": {"reason": reason, "message": message}}}
    if last:
        cs["lastState"] = {"terminated": {"startedAt": _now(), "finishedAt": _now(), **last}}
    return {"containerStatuses": [cs]}


def _inference_ready(client: Client, ns: str, name: str, reason: str) -> dict:
    return wait_for(lambda: (c := conditions(client, ns, name).get("InferenceReady", {}))
                    .get("reason") == reason and c, what=f"InferenceReady={reason}")


def _warning(client: Client, ns: str, name: str, reason: str, text: str) -> dict:
    def seen() -> dict | None:
        return next((e for e in events_for(client, ns, name)
                     if e["reason"] == reason and e["type"] == "Warning" and text in e["message"]), None)
    return wait_for(seen, what=f"Warning event {reason}")


def test_ray_pod_and_serve_failures_are_shown_in_the_workspace(
    ws_client: Client, ws_ns: str, kubeconfig: str
) -> None:
    client, ns, name = ws_client, ws_ns, "fails"
    rs_name = names.rayservice_name(name)
    cluster = f"{rs_name}-abcde"
    with running_controller(kubeconfig):
        client.create(WORKSPACES, workspace_manifest(name, count=1), ns)
        [m] = wait_for(lambda: machines_of(client, ns, name), what="machine")
        set_machine_status(client, m["metadata"]["name"], True, node="node-a")
        wait_for(lambda: client.get(RAYSERVICES, rs_name, ns), what="RayService")
        head = _ray_pod(client, ns, name, cluster, "head", "ray-head")
        worker = _ray_pod(client, ns, name, cluster, "worker", "ray-worker")

        # the head's image cannot be pulled: the kubelet's reason and message, then its back-off
        pull = 'Back-off pulling image "ghcr.io/kaito-py/rayserve:0.1.0": not found'
        _set_pod_status(client, ns, head, _waiting("ray-head", "ErrImagePull", "rpc error: not found"))
        cond = _inference_ready(client, ns, name, "ErrImagePull")
        assert cond["status"] == "False" and f"pod {head} container ray-head: ErrImagePull" in cond["message"]
        _set_pod_status(client, ns, head, _waiting("ray-head", "ImagePullBackOff", pull))
        cond = _inference_ready(client, ns, name, "ImagePullBackOff")
        assert pull in cond["message"]
        _warning(client, ns, name, "ImagePullBackOff", pull)
        ws = client.get(WORKSPACES, name, ns)
        ready = {c["type"]: c for c in ws["status"]["conditions"]}["WorkspaceReady"]
        assert ready["status"] == "False" and pull in ready["message"]

        # the head runs; the worker cannot be placed: the scheduler's words
        _set_pod_status(client, ns, head, {"phase": "Running", "containerStatuses": [{
            "name": "ray-head", "ready": True, "restartCount": 0, "image": "img", "imageID": "",
            "state": {"running": {"startedAt": _now()}}}]})
        _set_pod_status(client, ns, worker, {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": SCHEDULER,
            "lastTransitionTime": _now()}]})
        cond = _inference_ready(client, ns, name, "Unschedulable")
        assert f"pod {worker}: Unschedulable: {SCHEDULER}" in cond["message"]
        _warning(client, ns, name, "Unschedulable", SCHEDULER)

        # the worker is placed and its container is killed for memory, then crash-loops
        backoff = f"back-off 40s restarting failed container=ray-worker pod={worker}_{ns}"
        _set_pod_status(client, ns, worker, _waiting("ray-worker", "CrashLoopBackOff", backoff,
                                                     last={"reason": "OOMKilled", "exitCode": 137}))
        cond = _inference_ready(client, ns, name, "OOMKilled")
        assert "OOMKilled: the container ran out of memory (exit code 137)" in cond["message"]
        _warning(client, ns, name, "OOMKilled", "exit code 137")
        _set_pod_status(client, ns, worker, _waiting("ray-worker", "CrashLoopBackOff", backoff, last={
            "reason": "Error", "exitCode": 1, "message": "ModuleNotFoundError: No module named 'rayserve'"}))
        cond = _inference_ready(client, ns, name, "CrashLoopBackOff")
        assert backoff in cond["message"] and "No module named 'rayserve'" in cond["message"]
        _warning(client, ns, name, "CrashLoopBackOff", "No module named 'rayserve'")

        # both pods run; Ray Serve cannot place a replica: Serve's message, as KubeRay copies it
        _set_pod_status(client, ns, worker, {"phase": "Running", "containerStatuses": [{
            "name": "ray-worker", "ready": True, "restartCount": 4, "image": "img", "imageID": "",
            "state": {"running": {"startedAt": _now()}}}]})
        client.patch(RAYSERVICES, rs_name, {"status": {
            "conditions": [{"type": "Ready", "status": "False", "reason": "Initializing", "message": "",
                            "lastTransitionTime": _now()}],
            "pendingServiceStatus": {"rayClusterName": cluster, "applicationStatuses": {"llm": {
                "status": "DEPLOYING", "serveDeploymentStatuses": {
                    "LLMServer": {"status": "UPDATING", "message": SERVE}}}}}}},
            namespace=ns, subresource="status")
        cond = _inference_ready(client, ns, name, "ServeDeploymentNotHealthy")
        assert f"Ray Serve deployment llm/LLMServer UPDATING: {SERVE}" in cond["message"]
        assert "llm=DEPLOYING" in cond["message"]
        _warning(client, ns, name, "ServeDeploymentNotHealthy", "total resources available")
