"""The provisioner against a real kube-apiserver, with the fake cloud making real Node objects.

Each test runs the provisioner in-process exactly as ``kaito-provisioner`` wires it (manager,
informers, Machine controller, fake cloud data plane) and watches only Machines labelled with its
own run id; the fake cloud's inventory lives in a namespace of its own.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from prometheus_client import REGISTRY
from prov_it_helpers import (
    A100,
    condition,
    condition_is,
    config,
    delete_machines,
    events_for,
    fake,
    gone,
    machine_manifest,
    running,
    wait_for,
)

from controller.api.kinds import MACHINES
from controller.api.machine import (
    CONDITION_INITIALIZED,
    CONDITION_LAUNCHED,
    CONDITION_READY,
    CONDITION_REGISTERED,
    FINALIZER_TERMINATION,
    LABEL_INITIALIZED,
    LABEL_INSTANCE_TYPE,
    LABEL_MACHINE_NAME,
    LABEL_REGISTERED,
    TAINT_NOT_READY,
)
from controller.runtime import Client, Manager
from controller.runtime.kinds import NODES
from provisioner.cloud import base
from provisioner.cloud.fake import FakeCloud, instance_name
from provisioner.setup import setup_machine_controller

pytestmark = pytest.mark.integration


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"provider": "fake"}) or 0.0


def test_machine_goes_launched_registered_initialized_ready(
    prov_client: Client, cloud_ns: str, run_id: str
) -> None:
    name = f"ws{run_id}"
    launches_before = _metric("kaito_provisioner_machine_launch_duration_seconds_count")
    registrations_before = _metric("kaito_provisioner_machine_registration_duration_seconds_count")
    with running(prov_client, config(cloud_ns, run_id)) as prov:
        prov_client.create(MACHINES, machine_manifest(name, run_id))

        # the instance's labels are patched on right after the status write that says Launched
        launched = wait_for(
            lambda: (m := condition_is(prov_client, name, CONDITION_LAUNCHED))
            and LABEL_INSTANCE_TYPE in (m["metadata"].get("labels") or {}) and m,
            15, "launched and labelled",
        )
        assert FINALIZER_TERMINATION in launched["metadata"]["finalizers"]
        uid = launched["metadata"]["uid"]
        node_name = instance_name(name, uid)
        assert launched["status"]["providerID"] == f"fake://{node_name}"
        assert launched["status"]["capacity"]["nvidia.com/gpu"] == "1"
        assert launched["metadata"]["labels"][LABEL_INSTANCE_TYPE] == A100
        # the node boots 1 s later: until then the Machine says what it waits for
        registered = condition(launched, CONDITION_REGISTERED)
        assert registered is not None and registered["reason"] == "NodeNotFound"

        ready = wait_for(lambda: condition_is(prov_client, name, CONDITION_READY), 20, "ready")
        assert condition(ready, CONDITION_REGISTERED)["status"] == "True"
        assert condition(ready, CONDITION_INITIALIZED)["status"] == "True"
        assert ready["status"]["nodeName"] == node_name
        assert ready["status"]["allocatable"]["nvidia.com/gpu"] == "1"

        node = prov_client.get(NODES, node_name)
        labels = node["metadata"]["labels"]
        assert labels[LABEL_MACHINE_NAME] == name
        assert labels[LABEL_REGISTERED] == "true"
        assert labels[LABEL_INITIALIZED] == "true"
        assert labels["kaito.sh/workspace"] == "phi-3"
        assert labels[LABEL_INSTANCE_TYPE] == A100
        assert FINALIZER_TERMINATION in node["metadata"]["finalizers"]
        taints = {(t["key"], t["effect"]) for t in node["spec"]["taints"]}
        assert ("sku", "NoSchedule") in taints
        assert ("example.com/gpu-driver", "NoSchedule") not in taints, "startup taint cleared"
        assert (TAINT_NOT_READY, "NoSchedule") not in taints
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"
        assert [i.machine_name for i in prov.provider.list()] == [name]
        # steady state: no more writes (a status that never compares equal would loop forever)
        machine_rv = prov_client.get(MACHINES, name)["metadata"]["resourceVersion"]
        node_rv = node["metadata"]["resourceVersion"]
        time.sleep(1.5)
        assert prov_client.get(MACHINES, name)["metadata"]["resourceVersion"] == machine_rv
        assert prov_client.get(NODES, node_name)["metadata"]["resourceVersion"] == node_rv
        assert _metric("kaito_provisioner_machine_launch_duration_seconds_count") == launches_before + 1
        assert (
            _metric("kaito_provisioner_machine_registration_duration_seconds_count")
            == registrations_before + 1
        )

        # deletion: Node first, then the instance, then the finalizer
        prov_client.delete(MACHINES, name)
        wait_for(lambda: gone(prov_client, MACHINES, name), 15, "machine gone")
        assert gone(prov_client, NODES, node_name)
        assert prov.provider.list() == []
        assert events_for(prov_client, name, "Terminated")


def test_provider_failure_shows_its_reason_then_recovers(
    prov_client: Client, cloud_ns: str, run_id: str
) -> None:
    name = f"ws{run_id}"
    errors = "kaito_provisioner_cloudprovider_errors_total"
    labels = {"provider": "fake", "operation": "create", "reason": "QuotaExceeded"}
    errors_before = REGISTRY.get_sample_value(errors, labels) or 0.0
    with running(prov_client, config(cloud_ns, run_id)) as prov:
        fake(prov).fail("quota", sku=A100)
        prov_client.create(MACHINES, machine_manifest(name, run_id))

        failed = wait_for(
            lambda: condition_is(prov_client, name, CONDITION_LAUNCHED, "False"), 15, "launch failed"
        )
        launched = condition(failed, CONDITION_LAUNCHED)
        assert launched["reason"] == "QuotaExceeded"
        assert "quota" in launched["message"] and A100 in launched["message"]
        ready = condition(failed, CONDITION_READY)
        assert (ready["status"], ready["reason"]) == ("False", "QuotaExceeded"), "Ready says why too"
        assert events_for(prov_client, name, "QuotaExceeded")[0]["type"] == "Warning"
        assert prov.provider.list() == []
        wait_for(lambda: (REGISTRY.get_sample_value(errors, labels) or 0) >= errors_before + 2, 10, "retried")

        fake(prov).clear_failures()  # a person raised the quota: the retry goes through
        wait_for(lambda: condition_is(prov_client, name, CONDITION_READY), 20, "ready after the quota fix")
        delete_machines(prov_client, run_id)


def test_registration_timeout_deletes_the_machine(prov_client: Client, cloud_ns: str, run_id: str) -> None:
    name = f"ws{run_id}"
    with running(prov_client, config(cloud_ns, run_id, registration_ttl=2.0)) as prov:
        fake(prov).set_boot_delay(float("inf"), sku=A100)  # the VM never joins the cluster
        prov_client.create(MACHINES, machine_manifest(name, run_id))
        wait_for(lambda: condition_is(prov_client, name, CONDITION_LAUNCHED), 15, "launched")
        assert len(prov.provider.list()) == 1

        wait_for(lambda: gone(prov_client, MACHINES, name), 20, "machine deleted by liveness")
        [event] = events_for(prov_client, name, "RegistrationTimeout")
        assert event["type"] == "Warning" and "2s" in event["message"]
        assert prov.provider.list() == [], "the instance went with the machine"


def test_deleting_a_node_replaces_nothing_but_cleans_up(
    prov_client: Client, cloud_ns: str, run_id: str
) -> None:
    """A registered Machine whose Node is deleted is deleted too (its instance with it)."""
    name = f"ws{run_id}"
    with running(prov_client, config(cloud_ns, run_id)) as prov:
        prov_client.create(MACHINES, machine_manifest(name, run_id))
        ready = wait_for(lambda: condition_is(prov_client, name, CONDITION_READY), 20, "ready")
        prov_client.delete(NODES, ready["status"]["nodeName"])
        wait_for(lambda: gone(prov_client, MACHINES, name), 15, "machine deleted after its node")
        assert gone(prov_client, NODES, ready["status"]["nodeName"])
        assert prov.provider.list() == []


def test_restart_in_the_middle_neither_leaks_nor_duplicates(
    prov_client: Client, cloud_ns: str, run_id: str
) -> None:
    names = [f"ws{run_id}a", f"ws{run_id}b"]
    cfg = config(cloud_ns, run_id)
    cfg.fake_delay = 2.0
    with running(prov_client, cfg) as first:
        for name in names:
            prov_client.create(MACHINES, machine_manifest(name, run_id))
        for name in names:
            wait_for(lambda n=name: condition_is(prov_client, n, CONDITION_LAUNCHED), 15, "launched")
        instances = sorted(i.id for i in first.provider.list())
        assert len(instances) == 2
    # the process is gone while both VMs boot; a Machine is deleted meanwhile
    prov_client.delete(MACHINES, names[1])
    assert not gone(prov_client, MACHINES, names[1]), "held by the finalizer"

    with running(prov_client, cfg) as second:
        ready = wait_for(
            lambda: condition_is(prov_client, names[0], CONDITION_READY), 20, "ready after restart"
        )
        wait_for(lambda: gone(prov_client, MACHINES, names[1]), 15, "deleted after restart")
        assert [i.id for i in second.provider.list()] == [instance_name(names[0], ready["metadata"]["uid"])]
        assert instances[0] in {i.id for i in second.provider.list()} | {instances[1]}
        nodes, _ = prov_client.list(NODES, label_selector=f"{LABEL_MACHINE_NAME}={names[0]}")
        assert [n["metadata"]["name"] for n in nodes] == [ready["status"]["nodeName"]]
        fake_nodes, _ = prov_client.list(NODES, label_selector=f"fake.kaito.sh/cloud={cloud_ns}")
        assert len(fake_nodes) == 1, "the deleted machine's VM never left a node behind"
        delete_machines(prov_client, run_id)
        assert second.provider.list() == []


def test_orphan_sweep_deletes_instances_without_a_machine(
    prov_client: Client, cloud_ns: str, run_id: str
) -> None:
    cfg = config(cloud_ns, run_id)
    cfg.fake_delay = 0.2
    with running(prov_client, cfg) as prov:
        orphan = prov.provider.create(
            base.LaunchRequest(machine_name=f"gone{run_id}", machine_uid="no-such-uid", instance_type=A100)
        )
        wait_for(lambda: not gone(prov_client, NODES, orphan.id), 10, "orphan's node booted")
        prov.sweeper.grace_period = 3600
        assert prov.sweeper.sweep() == [], "too young to be swept"
        prov.sweeper.grace_period = 0
        assert prov.sweeper.sweep() == [orphan.id]
        assert prov.provider.list() == []
        assert gone(prov_client, NODES, orphan.id)


def test_fake_cloud_instances_are_found_by_a_new_process(prov_client: Client, cloud_ns: str) -> None:
    """No in-memory truth: a second FakeCloud on the same namespace sees and boots the instance."""
    inventory = f"{cloud_ns}-inv"  # does not exist yet: the first create makes it
    first = FakeCloud(prov_client, namespace=inventory, boot_delay=0.0, ready_delay=0.0)
    inst = first.create(
        base.LaunchRequest(machine_name="m1", machine_uid="u1", instance_type="Standard_Fake_GPU")
    )
    second = FakeCloud(prov_client, namespace=inventory, ready_delay=0.0)
    assert [i.id for i in second.list()] == [inst.id]
    second.tick()
    node = prov_client.get(NODES, inst.id)
    assert node["spec"]["providerID"] == inst.provider_id
    second.tick()
    node = prov_client.get(NODES, inst.id)
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    second.delete(inst.id)
    assert gone(prov_client, NODES, inst.id)
    with pytest.raises(base.NotFound):
        first.delete(inst.id)


class _NoProviderIdCloud(FakeCloud):
    """A cloud whose instances never get as far as a providerID (an AKS pool stuck in Creating)."""

    def create(self, req: base.LaunchRequest) -> base.Instance:
        return (
            super().create(req).model_copy(update={"provider_id": "", "state": base.InstanceState.CREATING})
        )


def test_instance_stuck_before_provider_id_times_out(prov_client: Client, cloud_ns: str, run_id: str) -> None:
    name = f"ws{run_id}"
    stuck = _NoProviderIdCloud(prov_client, namespace=cloud_ns, boot_delay=float("inf"))
    mgr = Manager(prov_client, "prov-stuck", leader_election=False, health_port=None, metrics_port=None)
    options = replace(config(cloud_ns, run_id).options, registration_ttl=2.0)
    setup_machine_controller(mgr, stuck, options)
    mgr.start()
    try:
        prov_client.create(MACHINES, machine_manifest(name, run_id))
        launching = wait_for(
            lambda: condition_is(prov_client, name, CONDITION_LAUNCHED, "Unknown"), 10, "launching"
        )
        assert "waiting for fake instance" in condition(launching, CONDITION_LAUNCHED)["message"]
        wait_for(lambda: gone(prov_client, MACHINES, name), 20, "machine deleted by liveness")
        assert events_for(prov_client, name, "RegistrationTimeout")
        assert stuck.list() == []
    finally:
        mgr.stop()
