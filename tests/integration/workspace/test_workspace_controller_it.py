"""The workspace controller end to end on a real kube-apiserver.

The test plays the provisioner (marks Machines Ready) and KubeRay (sets RayService status), so
what is checked is exactly the controller's contract: Machines -> RayService + Service ->
conditions in order -> finalizer cleanup, restarts that create nothing twice, and metrics.
"""

from __future__ import annotations

import pytest
import yaml
from ws_it_helpers import (
    conditions,
    events_for,
    gone,
    machines_of,
    running_controller,
    scrape,
    set_machine_status,
    set_rayservice_running,
    wait_for,
    wait_for_events,
    workspace_manifest,
)

from controller.api.kinds import MACHINES, RAYSERVICES, WORKSPACES
from controller.api.workspace import Workspace
from controller.runtime import Client
from controller.workspace import names
from controller.workspace.plan import plan_for
from controller.workspace.reconciler import CONFIGMAPS, JOBS, SERVICES
from controller.workspace.serveconfig import build_serve_config

pytestmark = pytest.mark.integration


def _status(client: Client, ns: str, name: str) -> tuple[str | None, str | None, str | None]:
    c = conditions(client, ns, name)
    return tuple(c.get(t, {}).get("status") for t in ("ResourceReady", "InferenceReady", "WorkspaceReady"))


def test_apply_machines_rayservice_conditions_in_order_then_delete(
    ws_client: Client, ws_ns: str, kubeconfig: str
) -> None:
    client, ns, name = ws_client, ws_ns, "phi"
    with running_controller(kubeconfig) as mgr:
        client.create(WORKSPACES, workspace_manifest(name, count=2), ns)

        # finalizer, target count, two Machines with deterministic names and the owner labels
        ms = wait_for(
            lambda: len(machines_of(client, ns, name)) == 2 and machines_of(client, ns, name),
            what="2 machines",
        )
        expected = [names.machine_name(ns, name, i) for i in range(2)]
        assert [m["metadata"]["name"] for m in ms] == expected
        for m in ms:
            assert m["metadata"]["labels"][names.LABEL_WORKSPACE] == name
            assert m["metadata"]["labels"][names.LABEL_WORKSPACE_NAMESPACE] == ns
            assert m["metadata"]["labels"]["apps"] == name
            assert m["spec"]["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
            assert m["spec"]["resources"]["requests"]["storage"] == "50Gi"
        ws = wait_for(
            lambda: (o := client.get(WORKSPACES, name, ns)).get("status", {}).get("targetNodeCount") and o,
            what="targetNodeCount",
        )
        assert ws["status"]["targetNodeCount"] == 2
        assert names.FINALIZER in ws["metadata"]["finalizers"]
        rr = wait_for(lambda: conditions(client, ns, name).get("ResourceReady"), what="ResourceReady")
        assert rr["status"] == "False" and rr["reason"] == "MachinesNotReady"
        assert "0/2 machines ready" in rr["message"] and "Estimate:" in rr["message"]

        # a launch failure is surfaced with the provisioner's message
        set_machine_status(
            client, expected[1], False, launched=("False", "QuotaExceeded", "quota for NCv3 is 0")
        )
        rr = wait_for(
            lambda: (
                (c := conditions(client, ns, name)["ResourceReady"])["reason"] == "MachineLaunchFailed" and c
            ),
            what="MachineLaunchFailed",
        )
        assert "quota for NCv3 is 0" in rr["message"]

        # Machines Ready -> ResourceReady, workerNodes, RayService + Service
        set_machine_status(client, expected[0], True, node="node-a")
        set_machine_status(client, expected[1], True, node="node-b")
        wait_for(lambda: _status(client, ns, name)[0] == "True", what="ResourceReady=True")
        assert _status(client, ns, name)[1:] == ("False", "False")  # in order: resources first
        ws = client.get(WORKSPACES, name, ns)
        assert ws["status"]["workerNodes"] == ["node-a", "node-b"]
        rs = wait_for(lambda: client.get(RAYSERVICES, names.rayservice_name(name), ns), what="RayService")
        parsed = Workspace.model_validate(ws)
        assert rs["spec"]["serveConfigV2"] == build_serve_config(parsed, plan_for(parsed))
        [app] = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"]
        assert app["import_path"] == "rayserve.app:build_app"
        assert app["args"]["model"]["name"] == "phi-3-mini-4k-instruct"
        [dep] = app["deployments"]
        # 2 nodes x 2 GPUs (NC12s_v3), one GPU per replica -> up to 4 replicas
        assert (
            dep["autoscaling_config"]["max_replicas"] == 4 and dep["autoscaling_config"]["min_replicas"] == 1
        )
        assert dep["ray_actor_options"]["num_gpus"] == 1
        assert rs["metadata"]["ownerReferences"][0]["uid"] == ws["metadata"]["uid"]
        worker = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
        assert worker["replicas"] == 2
        assert worker["template"]["spec"]["nodeSelector"][names.LABEL_WORKSPACE] == name
        svc = wait_for(lambda: client.get(SERVICES, names.service_name(name), ns), what="Service")
        assert svc["spec"]["ports"][0]["port"] == 80 and svc["spec"]["ports"][0]["targetPort"] == 8000
        ir = wait_for(lambda: conditions(client, ns, name)["InferenceReady"], what="InferenceReady")
        assert ir["status"] == "False"

        # KubeRay reports the app RUNNING -> InferenceReady, then WorkspaceReady
        set_rayservice_running(client, ns, names.rayservice_name(name))
        wait_for(lambda: _status(client, ns, name) == ("True", "True", "True"), what="all ready")
        ws = client.get(WORKSPACES, name, ns)
        assert ws["status"]["state"] == "Ready"
        wait_for_events(
            client, ns, name, {"MachineCreated", "RayServiceCreated", "MachinesReady", "InferenceReady"}
        )

        # metrics on the Manager's /metrics
        text = wait_for(
            lambda: (
                (t := scrape(mgr.metrics_port))
                and f'kaito_workspace_ready{{condition="WorkspaceReady",name="{name}",namespace="{ns}"}} 1.0'
                in t
                and t
            ),
            what="ready gauge",
        )
        assert 'kaito_workspace_time_to_ready_seconds_count{preset_name="phi-3-mini-4k-instruct"}' in text
        assert "kaito_workspace_count{phase=" in text
        assert 'kaito_workspace_preset_count{preset_name="phi-3-mini-4k-instruct"}' in text
        assert 'controller_runtime_reconcile_total{controller="workspace"' in text

        # delete: the finalizer removes the Machines, then lets the Workspace go
        client.delete(WORKSPACES, name, ns)
        wait_for(lambda: not machines_of(client, ns, name), what="machines deleted")
        wait_for(lambda: gone(client, WORKSPACES, name, ns), what="workspace gone")


def test_deletion_waits_for_machines_to_be_gone(ws_client: Client, ws_ns: str, kubeconfig: str) -> None:
    client, ns, name = ws_client, ws_ns, "held"
    with running_controller(kubeconfig):
        client.create(WORKSPACES, workspace_manifest(name), ns)
        [m] = wait_for(lambda: machines_of(client, ns, name), what="machine")
        # the provisioner's termination finalizer holds the Machine while the cloud VM goes
        client.patch(
            MACHINES, m["metadata"]["name"], {"metadata": {"finalizers": ["karpenter.sh/termination"]}}
        )
        client.delete(WORKSPACES, name, ns)
        wait_for(
            lambda: machines_of(client, ns, name)[0]["metadata"].get("deletionTimestamp"), what="deleting"
        )
        deleting = wait_for(
            lambda: conditions(client, ns, name).get("WorkspaceDeleting"), what="WorkspaceDeleting"
        )
        assert m["metadata"]["name"] in deleting["message"]
        assert not gone(client, WORKSPACES, name, ns)  # held by our finalizer until the Machine is gone
        client.patch(MACHINES, m["metadata"]["name"], {"metadata": {"finalizers": None}})
        wait_for(lambda: gone(client, WORKSPACES, name, ns), what="workspace gone")


def test_restart_midway_creates_nothing_twice(ws_client: Client, ws_ns: str, kubeconfig: str) -> None:
    client, ns, name = ws_client, ws_ns, "restart"
    client.create(WORKSPACES, workspace_manifest(name, count=3), ns)
    with running_controller(kubeconfig):
        first = wait_for(lambda: len(ms := machines_of(client, ns, name)) == 3 and ms, what="3 machines")
    uids = {m["metadata"]["name"]: m["metadata"]["uid"] for m in first}
    for i, m in enumerate(first):
        set_machine_status(client, m["metadata"]["name"], True, node=f"node-{i}")
    # a new controller process (fresh caches) picks up where the old one stopped
    with running_controller(kubeconfig):
        rs = wait_for(lambda: client.get(RAYSERVICES, names.rayservice_name(name), ns), what="RayService")
        set_rayservice_running(client, ns, rs["metadata"]["name"])
        wait_for(lambda: _status(client, ns, name) == ("True", "True", "True"), what="all ready")
    with running_controller(kubeconfig):  # and once more, when all is done
        wait_for(lambda: _status(client, ns, name) == ("True", "True", "True"), what="still ready")
        after = machines_of(client, ns, name)
        assert {m["metadata"]["name"]: m["metadata"]["uid"] for m in after} == uids
        rss, _ = client.list(RAYSERVICES, ns)
        assert len(rss) == 1
        assert client.get(WORKSPACES, name, ns)["status"]["targetNodeCount"] == 3


def test_invalid_workspace_is_reported_not_crashed(ws_client: Client, ws_ns: str, kubeconfig: str) -> None:
    client, ns, name = ws_client, ws_ns, "bad"
    with running_controller(kubeconfig):
        client.create(WORKSPACES, workspace_manifest(name, preset="phi-9-ultra"), ns)
        rr = wait_for(lambda: conditions(client, ns, name).get("ResourceReady"), what="ResourceReady")
        assert rr["status"] == "False"
        assert "phi-9-ultra" in rr["message"]
        assert machines_of(client, ns, name) == []
        wait_for(
            lambda: any(e["type"] == "Warning" for e in events_for(client, ns, name)), what="warning event"
        )
        ws = client.get(WORKSPACES, name, ns)
        assert ws["status"]["state"] == "NotReady"


@pytest.mark.parametrize(
    "output, containers",
    [
        ({"volumeSource": {"emptyDir": {}}}, ["tuning"]),
        # the API server must accept the pusher's pod template (secret volume items, mounts)
        ({"image": "registry.example.com/adapters/tune:1", "imagePushSecret": "push"},
         ["tuning", "adapter-pusher"]),
    ],
    ids=["volume", "image"],
)
def test_tuning_workspace_runs_a_job(
    ws_client: Client, ws_ns: str, kubeconfig: str, output: dict, containers: list[str]
) -> None:
    client, ns, name = ws_client, ws_ns, f"tune-{len(containers)}"
    tuning = {
        "preset": {"name": "phi-3-mini-4k-instruct"},
        "method": "qlora",
        "input": {"urls": ["https://example.com/data.jsonl"]},
        "output": output,
    }
    with running_controller(kubeconfig):
        client.create(
            WORKSPACES, workspace_manifest(name, instance_type="Standard_NC24ads_A100_v4", tuning=tuning), ns
        )
        [m] = wait_for(lambda: machines_of(client, ns, name), what="machine")
        set_machine_status(client, m["metadata"]["name"], True, node="gpu-0")
        job = wait_for(lambda: client.get(JOBS, names.tuning_job_name(name), ns), what="Job")
        pod = job["spec"]["template"]["spec"]
        assert [c["name"] for c in pod["containers"]] == containers
        assert " ".join(pod["containers"][0]["command"]).count("python -m rayserve.tuning") == 1
        js = wait_for(lambda: conditions(client, ns, name).get("JobStarted"), what="JobStarted")
        assert js["status"] == "False"
        now = "2026-01-01T00:00:00Z"
        client.patch(
            JOBS,
            job["metadata"]["name"],
            {"status": {"startTime": now, "active": 1}},
            namespace=ns,
            subresource="status",
        )
        wait_for(
            lambda: conditions(client, ns, name)["JobStarted"]["status"] == "True", what="JobStarted=True"
        )
        assert client.get(WORKSPACES, name, ns)["status"]["state"] == "Running"


def test_tuning_config_configmap_is_waited_for_checked_and_mounted(
    ws_client: Client, ws_ns: str, kubeconfig: str
) -> None:
    """tuning.config: a missing ConfigMap is waited for (polled: no informer watches ConfigMaps), a
    bad one fails the workspace with the parser's message, a fixed one gets the Job with the mount."""
    client, ns, name = ws_client, ws_ns, "tune-cfg"
    tuning = {
        "preset": {"name": "phi-3-mini-4k-instruct"},
        "method": "qlora",
        "config": "train-cfg",
        "input": {"urls": ["https://example.com/data.jsonl"]},
        "output": {"volumeSource": {"emptyDir": {}}},
    }
    with running_controller(kubeconfig):
        client.create(
            WORKSPACES, workspace_manifest(name, instance_type="Standard_NC24ads_A100_v4", tuning=tuning), ns
        )
        def condition(kind: str, reason: str) -> dict:
            def check() -> dict | None:
                c = conditions(client, ns, name).get(kind)
                return c if c and c["reason"] == reason else None

            return wait_for(check, what=f"{kind} reason {reason}")

        # missing: waited for before any GPU node is asked for
        rr = condition("ResourceReady", "TuningConfigNotFound")
        assert "ConfigMap train-cfg" in rr["message"] and f"namespace {ns}" in rr["message"]
        assert client.get(WORKSPACES, name, ns)["status"]["state"] == "Pending"
        assert machines_of(client, ns, name) == []
        job_name = names.tuning_job_name(name)

        bad = "training_config:\n  QuantizationConfig: {load_in_4bit: true}\n  LoraConfig: {r: -1}\n"
        cm = {"metadata": {"name": "train-cfg"}, "data": {"training_config.yaml": bad}}
        client.create(CONFIGMAPS, cm, ns)
        js = condition("JobStarted", "InvalidWorkspace")  # within one poll (Options.config_poll_seconds)
        assert "LoraConfig.r: Input should be greater than or equal to 1" in js["message"]
        ws = client.get(WORKSPACES, name, ns)
        assert ws["status"]["state"] == "Failed"
        assert "LoraConfig.r" in conditions(client, ns, name)["WorkspaceSucceeded"]["message"]
        assert machines_of(client, ns, name) == [] and client.list(JOBS, ns)[0] == []

        good = bad.replace("r: -1", "r: 4") + "  TrainingArguments: {output_dir: /mnt/results/phi}\n"
        client.patch(CONFIGMAPS, "train-cfg", {"data": {"training_config.yaml": good}}, namespace=ns)
        [m] = wait_for(lambda: machines_of(client, ns, name), what="machine")
        set_machine_status(client, m["metadata"]["name"], True, node="gpu-0")
        job = wait_for(lambda: client.get(JOBS, job_name, ns), what="Job")
        pod = job["spec"]["template"]["spec"]
        [container] = pod["containers"]
        args = container["args"]
        assert args[args.index("--config") + 1] == "/mnt/config/training_config.yaml"
        assert args[args.index("--output") + 1] == "/mnt/results/phi"
        assert {"name": "config", "mountPath": "/mnt/config", "readOnly": True} in container["volumeMounts"]
        [volume] = [v for v in pod["volumes"] if v["name"] == "config"]
        assert volume["configMap"]["name"] == "train-cfg"
        condition("JobStarted", "JobPending")
        assert client.get(WORKSPACES, name, ns)["status"]["state"] == "Pending"


def _one_ready_machine(client: Client, ns: str, name: str) -> None:
    """Create a one-node workspace and play the provisioner: its Machine is Ready."""
    client.create(WORKSPACES, workspace_manifest(name), ns)
    [m] = wait_for(lambda: machines_of(client, ns, name), what="machine")
    set_machine_status(client, m["metadata"]["name"], True, node=f"node-{name}")


def test_adapter_change_updates_the_rayservice_in_place(
    ws_client: Client, ws_ns: str, kubeconfig: str
) -> None:
    client, ns, name = ws_client, ws_ns, "adapt"
    with running_controller(kubeconfig):
        _one_ready_machine(client, ns, name)
        rs = wait_for(lambda: client.get(RAYSERVICES, names.rayservice_name(name), ns), what="RayService")
        adapter = {"source": {"name": "french", "image": "registry.example/french:1"}, "strength": "0.5"}
        client.patch(WORKSPACES, name, {"inference": {"adapters": [adapter]}}, namespace=ns)

        def updated() -> dict | None:
            cur = client.get(RAYSERVICES, rs["metadata"]["name"], ns)
            return cur if cur["metadata"]["generation"] > rs["metadata"]["generation"] else None

        new = wait_for(updated, what="RayService updated")
        assert new["metadata"]["uid"] == rs["metadata"]["uid"]  # in place, not recreated
        [app] = yaml.safe_load(new["spec"]["serveConfigV2"])["applications"]
        assert app["args"]["adapters"] == [{"name": "french", "path": "/mnt/adapter/french", "strength": 0.5}]
        worker = new["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
        assert worker["initContainers"][0]["image"] == "registry.example/french:1"
        wait_for_events(client, ns, name, {"RayServiceUpdated"})


def test_enablelb_annotation_switches_the_service_type_in_place(
    ws_client: Client, ws_ns: str, kubeconfig: str
) -> None:
    client, ns, name = ws_client, ws_ns, "lb"
    with running_controller(kubeconfig, allow_load_balancer=True):
        _one_ready_machine(client, ns, name)
        svc_name = names.service_name(name)
        svc = wait_for(lambda: client.get(SERVICES, svc_name, ns), what="Service")
        assert svc["spec"]["type"] == "ClusterIP"
        cluster_ip = svc["spec"]["clusterIP"]

        def service_of_type(kind: str) -> dict | None:
            cur = client.get(SERVICES, svc_name, ns)
            return cur if cur["spec"]["type"] == kind else None

        client.patch(WORKSPACES, name, {"metadata": {"annotations": {
            "kaito.sh/enablelb": "True", "kaito.sh/loadbalancer-source-ranges": "203.0.113.0/24"}}},
                     namespace=ns)
        lb = wait_for(lambda: service_of_type("LoadBalancer"), what="LoadBalancer Service")
        assert lb["metadata"]["uid"] == svc["metadata"]["uid"] and lb["spec"]["clusterIP"] == cluster_ip
        assert lb["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
        assert lb["spec"]["ports"][0]["nodePort"]  # allocated by the server, kept by our update

        client.patch(WORKSPACES, name, {"metadata": {"annotations": {"kaito.sh/enablelb": None}}},
                     namespace=ns)
        back = wait_for(lambda: service_of_type("ClusterIP"), what="ClusterIP Service again")
        assert back["metadata"]["uid"] == svc["metadata"]["uid"] and back["spec"]["clusterIP"] == cluster_ip
        assert "externalTrafficPolicy" not in back["spec"]
        wait_for_events(client, ns, name, {"ServiceUpdated"})


def test_machines_of_a_workspace_whose_finalizer_was_stripped_are_swept(
    ws_client: Client, ws_ns: str, kubeconfig: str
) -> None:
    """The usual fix for a stuck Terminating Workspace (patch finalizers to null) skips the cleanup;
    the sweep deletes the Machines it left, so their GPU VMs do not run forever (issue 11, item 10).

    Stuck as it is in life: the controller is down while the Workspace is deleted and its
    finalizer stripped (with the controller up, it may put the finalizer back between the patch
    and the delete and clean up the normal way, which this test is not about); the sweep of the
    next controller finds the Machines."""
    client, ns, name = ws_client, ws_ns, "stripped"
    with running_controller(kubeconfig, orphan_grace_seconds=0.0, orphan_interval_seconds=0.5):
        client.create(WORKSPACES, workspace_manifest(name, count=2), ns)
        ms = wait_for(lambda: len(machines_of(client, ns, name)) == 2 and machines_of(client, ns, name),
                      what="2 machines")
    client.delete(WORKSPACES, name, ns)  # Terminating: nobody runs the finalizer
    client.patch(WORKSPACES, name, {"metadata": {"finalizers": None}}, ns)
    wait_for(lambda: gone(client, WORKSPACES, name, ns), what="workspace gone without its finalizer")
    assert len(machines_of(client, ns, name)) == 2  # left behind
    with running_controller(kubeconfig, orphan_grace_seconds=0.0, orphan_interval_seconds=0.5):
        wait_for(lambda: not machines_of(client, ns, name), timeout=30, what="orphaned machines swept")
        # Events of cluster-scoped objects go to the default namespace
        for m in ms:
            wait_for_events(client, "default", m["metadata"]["name"], {"OrphanDeleted"})
