"""The workspace controller with the real KubeRay operator (built by hack/kuberay/build.sh).

Everything else in the tree meets only our stand-in of KubeRay; here the upstream operator reads
the RayService our controller writes (on nodes our provisioner's fake cloud registers) and makes
what a GPU cluster would run: a RayCluster, head and worker Pods and the head Service. No kubelet
runs, so the Pods stay Pending; what is checked is what the scheduler and Ray would be handed:
the GPU count each worker requests, the nodes it selects and the taint it tolerates, the ports
and ``ray start`` parameters KubeRay derives, Ray's token auth (KubeRay's token Secret and the
env it injects from it), a serveConfigV2 KubeRay accepts, and a RayService spec that our
controller and KubeRay's defaulting leave alone once written (no update loop).
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ws_it_helpers import (
    conditions,
    make_namespace,
    running_controller,
    running_provisioner,
    wait_for,
    workspace_manifest,
)

from controller.api.kinds import RAYSERVICES, WORKSPACES
from controller.runtime import Client
from controller.runtime.client import ResourceKind
from controller.runtime.kinds import NAMESPACES, NODES, SECRETS, SERVICES
from controller.workspace import cluster_rollout, names, ray_auth
from controller.workspace.reconciler import RAY_POD_SELECTOR
from hack.controlplane.local import bin_dir
from hack.kuberay_standin.serveconfig import parse_serve_config
from hack.ports import free_port
from hack.procs import ManagedProcess, http_ok

pytestmark = pytest.mark.integration

RAYCLUSTERS = ResourceKind(group="ray.io", version="v1", plural="rayclusters", kind="RayCluster")
PODS = ResourceKind(group="", version="v1", plural="pods", kind="Pod")
GPU = "nvidia.com/gpu"
NVME_SKU = "Standard_NC48ads_A100_v4"  # 2 GPUs, local NVMe (presets/gpu_skus.yaml)
RAY_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
HEAD_PORTS = {"gcs-server": 6379, "dashboard": 8265, "serve": names.SERVE_PORT, "metrics": 8080}


@contextlib.contextmanager
def kuberay_operator(kubeconfig: str, namespace: str, log_dir: Path) -> Iterator[ManagedProcess]:
    """The upstream operator, watching ``namespace`` only, until it answers /readyz."""
    exe = bin_dir() / "kuberay-operator"
    assert exe.is_file(), f"{exe} missing: build it with hack/kuberay/build.sh (hack/test.sh does)"
    health = free_port()
    proc = ManagedProcess("kuberay-operator", [
        str(exe), f"--kubeconfig={kubeconfig}", f"--watch-namespace={namespace}",
        "--enable-leader-election=false", f"--metrics-addr=127.0.0.1:{free_port()}",
        f"--health-probe-bind-address=127.0.0.1:{health}", "--log-stdout-encoder=console",
    ], log_dir / "kuberay-operator.log").start()
    try:
        proc.wait_until(lambda: http_ok(f"http://127.0.0.1:{health}/readyz"), 60, "ready")
        yield proc
    finally:
        proc.stop()


def pods(client: Client, ns: str, selector: str) -> list[dict]:
    return client.list(PODS, ns, label_selector=selector)[0]


def ray_start(container: dict) -> str:
    """The shell line KubeRay generates to start Ray in a container."""
    return " ".join([*container.get("command", []), *container.get("args", [])])


def test_kuberay_turns_the_workspace_rayservice_into_a_gpu_ray_cluster(
    ws_client: Client, ws_ns: str, kubeconfig: str, tmp_path: Path
) -> None:
    client, ns = ws_client, ws_ns
    inventory = make_namespace(client)
    with (kuberay_operator(kubeconfig, ns, tmp_path) as operator, running_provisioner(kubeconfig, inventory),
          running_controller(kubeconfig)):
        # an SKU with local NVMe: the weights cache is a hostPath that an init container must chown
        client.create(WORKSPACES, workspace_manifest("phi", count=2, instance_type=NVME_SKU), ns)
        rs_name = names.rayservice_name("phi")

        def cluster() -> dict | None:
            items = client.list(RAYCLUSTERS, ns)[0]
            owners = [{o.get("name") for o in c["metadata"].get("ownerReferences", [])} for c in items]
            return next((c for c, o in zip(items, owners, strict=True) if rs_name in o), None)

        rc = wait_for(cluster, 90, f"KubeRay's RayCluster for {rs_name}:\n{operator.log_tail()}")
        sel = f"ray.io/cluster={rc['metadata']['name']}"
        head = wait_for(lambda: pods(client, ns, f"{sel},ray.io/node-type=head"), 60, "head pod")
        workers = wait_for(lambda: len(w := pods(client, ns, f"{sel},ray.io/node-type=worker")) == 2 and w,
                           60, "two worker pods")
        ws = client.get(WORKSPACES, "phi", ns)
        nodes = [client.get(NODES, n) for n in ws["status"]["workerNodes"]]
        assert len(nodes) == 2

        # --- the workers: GPUs, node selection, taints, ray start ------------------------------
        for pod in workers:
            spec = pod["spec"]
            [worker] = [c for c in spec["containers"] if c["name"] == "ray-worker"]
            assert worker["resources"]["limits"][GPU] == "2"
            assert worker["resources"]["requests"][GPU] == "2"  # what the scheduler counts
            assert "--num-gpus=2" in ray_start(worker)
            for node in nodes:  # each worker may land on each Workspace node, and only those
                labels = node["metadata"]["labels"]
                assert all(labels.get(k) == v for k, v in spec["nodeSelector"].items()), (labels, spec)
                for taint in node["spec"].get("taints") or []:
                    assert any(t.get("key") == taint["key"] and t.get("effect") == taint["effect"]
                               for t in spec["tolerations"]), taint
        # --- the head: ports, ray start, the head Service KubeRay makes from them -----------------
        [head_pod] = head
        [head_c] = [c for c in head_pod["spec"]["containers"] if c["name"] == "ray-head"]
        # only the ports used: no Ray Client (10001), which KubeRay adds when none are declared
        ports = {p["name"]: p["containerPort"] for p in head_c["ports"]}
        assert ports == HEAD_PORTS, ports
        start = ray_start(head_c)
        assert "ray start --head" in start and "--num-gpus=0" in start and "--dashboard-host=0.0.0.0" in start
        assert "--ray-client-server-port=0" in start  # and no Ray Client server listening at all
        svc = wait_for(lambda: client.get(SERVICES, f"{rc['metadata']['name']}-head-svc", ns), 60, "head svc")
        svc_ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
        assert svc_ports == HEAD_PORTS, svc_ports
        # --- the security context KubeRay keeps, in its own wait-for-GCS init container too ---------
        for pod in [head_pod, *workers]:
            spec = pod["spec"]
            assert spec["automountServiceAccountToken"] is False
            assert not any(v.get("projected") for v in spec.get("volumes", [])), "a service account token"
            ctx = spec["securityContext"]
            assert (ctx["runAsNonRoot"], ctx["runAsUser"], ctx["runAsGroup"]) == (True, 1000, 100), ctx
            assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
            [owner, *inits] = spec["initContainers"]
            assert owner["name"] == "model-cache-owner" and owner["command"][0] == "chown"
            assert owner["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
            for c in [*spec["containers"], *inits]:
                assert c["securityContext"] == RAY_SECURITY, (pod["metadata"]["name"], c["name"], c)
            if pod is not head_pod:
                assert any(c["name"] == "wait-gcs-ready" for c in inits), inits  # KubeRay's
        # --- Ray's token auth: KubeRay's own Secret, its token in every Ray container ---------------
        assert rc["spec"]["authOptions"] == {"mode": "token"}
        secret_name = ray_auth.token_secret_name(rc["metadata"]["name"])
        secret = wait_for(lambda: client.get(SECRETS, secret_name, ns), 30, "KubeRay's token Secret")
        assert base64.b64decode(secret["data"][ray_auth.TOKEN_SECRET_KEY])  # a token, never ours
        assert [(o["kind"], o["uid"]) for o in secret["metadata"]["ownerReferences"]] == [
            ("RayCluster", rc["metadata"]["uid"])]  # it goes with the cluster
        token_ref = {"secretKeyRef": {"name": secret_name, "key": ray_auth.TOKEN_SECRET_KEY}}
        for pod in [head_pod, *workers]:
            ray_containers = [c for c in [*pod["spec"]["containers"], *pod["spec"]["initContainers"]]
                              if c["name"] in ("ray-head", "ray-worker", "wait-gcs-ready")]
            assert len(ray_containers) == (1 if pod is head_pod else 2)
            for c in ray_containers:
                env = {e["name"]: e for e in c["env"]}
                assert env["RAY_AUTH_MODE"] == {"name": "RAY_AUTH_MODE", "value": "token"}, c["name"]
                assert env["RAY_AUTH_TOKEN"]["valueFrom"] == token_ref, c["name"]
        # probes under auth: Ray >= 2.53 gets the agent's /api/healthz, which Ray leaves open
        assert head_c["readinessProbe"]["httpGet"]["path"] == "/api/healthz", head_c["readinessProbe"]
        # our Service (port 80 -> serve) selects KubeRay's Ray pods
        ours = client.get(SERVICES, names.service_name("phi"), ns)
        head_labels = head_pod["metadata"]["labels"]
        assert all(head_labels.get(k) == v for k, v in ours["spec"]["selector"].items())

        # --- serveConfigV2 accepted, and the spec stable under KubeRay and our controller -----------
        # KubeRay's first cluster is the pending one, and Ready says it is initializing: what the
        # stand-in writes and our controller reads as "waiting", not as a failure
        rs = wait_for(lambda: (r := client.get(RAYSERVICES, rs_name, ns)).get("status", {}).get(
            "pendingServiceStatus", {}).get("rayClusterName") and r, 30, "KubeRay's RayService status")
        # KubeRay PUTs serveConfigV2 to the head's dashboard only once the head runs (never here),
        # so "accepted" is: past KubeRay's validation (no ValidationFailed) and valid under Ray
        # Serve's own schema, which that dashboard PUT applies (test_upstream_schemas checks it is
        # stored byte for byte)
        parse_serve_config(ns, rs_name, rs["spec"]["serveConfigV2"])
        status = rs["status"]
        assert "ValidationFailed" not in {c.get("reason") for c in status["conditions"]}, status
        assert status["pendingServiceStatus"]["rayClusterName"] == rc["metadata"]["name"]
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "Initializing")
        inference = wait_for(lambda: (c := conditions(client, ns, "phi")["InferenceReady"])["reason"] ==
                             "Initializing" and c, 30, "InferenceReady from KubeRay's status")
        assert inference["status"] == "False"
        generation, version = rs["metadata"]["generation"], rs["metadata"]["resourceVersion"]
        writes = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            now = client.get(RAYSERVICES, rs_name, ns)
            if now["metadata"]["resourceVersion"] != version:
                version = now["metadata"]["resourceVersion"]
                writes.append(_spec_writes(now))
            time.sleep(1)
        assert now["metadata"]["generation"] == generation, f"spec rewritten over 20 s: {writes}"
        assert len(client.list(RAYCLUSTERS, ns)[0]) == 1, "KubeRay made a second RayCluster (spec drift)"
        assert conditions(client, ns, "phi")["ResourceReady"]["status"] == "True"

        # --- KubeRay's pods are the ones the controller watches, and their failures reach the Workspace
        seen = {p["metadata"]["name"] for p in pods(client, ns, RAY_POD_SELECTOR)}
        assert seen == {p["metadata"]["name"] for p in [*head, *workers]}
        stuck = client.get(PODS, workers[0]["metadata"]["name"], ns)
        why = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
        stuck["status"] = {"phase": "Pending", "conditions": [{  # play the scheduler
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": why,
            "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}]}
        client.update_status(PODS, stuck)
        inference = wait_for(lambda: (c := conditions(client, ns, "phi")["InferenceReady"])["reason"] ==
                             "Unschedulable" and c, 30, "InferenceReady from the scheduler's words")
        assert f"pod {stuck['metadata']['name']}: Unschedulable: {why}" in inference["message"]

        # --- an adapter edit on fixed nodes: one cluster replaced, never a second beside it ---------
        assert now["spec"]["upgradeStrategy"] == {"type": "None"}  # KubeRay accepts it as is
        old = rc["metadata"]["uid"]  # KubeRay may reuse the name the status holds: a new object
        ws = client.get(WORKSPACES, "phi", ns)
        ws["inference"]["adapters"] = [{"source": {"name": "fr", "image": "registry.example.com/fr:1"}}]
        client.update(WORKSPACES, ws)
        hash_key = cluster_rollout.ANNOTATION_CLUSTER_HASH
        rs = wait_for(lambda: (r := client.get(RAYSERVICES, rs_name, ns))["metadata"]["annotations"].get(
            hash_key) != rc["metadata"]["annotations"].get(hash_key) and r, 30, "the edited RayService")
        want = rs["metadata"]["annotations"][hash_key]
        new = wait_for(lambda: (items := client.list(RAYCLUSTERS, ns)[0]) and len(items) == 1
                       and items[0]["metadata"]["uid"] != old
                       and items[0]["metadata"]["annotations"].get(hash_key) == want and items[0], 90,
                       f"one RayCluster of the new spec:\n{operator.log_tail()}")
        [worker_group] = new["spec"]["workerGroupSpecs"]
        inits = worker_group["template"]["spec"].get("initContainers") or []
        assert any(c["name"].startswith("puller") for c in inits), inits
        time.sleep(5)  # and it stays one: no second cluster, no replacement loop
        assert [c["metadata"]["uid"] for c in client.list(RAYCLUSTERS, ns)[0]] == [new["metadata"]["uid"]]
    client.delete(NAMESPACES, inventory)


def _spec_writes(rs: dict) -> list[tuple[str, str]]:
    """Who last wrote what (managedFields), for a failure message."""
    return [(m.get("manager", ""), m.get("subresource", "")) for m in rs["metadata"].get("managedFields", [])]
