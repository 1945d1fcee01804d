"""Helpers for the provisioner's integration tests: the Machine CRD, Machines, an in-process
provisioner that can be stopped and rebuilt (a restart), and polling."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from k8s_helpers import (  # noqa: F401 (re-exported)
    CRDS,
    EVENTS,
    NAMESPACES,
    gone,
    install_project_crds,
    wait_for,
    wait_for_events,
)
from k8s_helpers import make_namespace as _make_namespace

from controller.api.kinds import MACHINES
from controller.api.machine import LABEL_INSTANCE_TYPE
from controller.runtime import Client
from provisioner.cloud.fake import FakeCloud
from provisioner.machine_controller import Options
from provisioner.main import Config, Provisioner, build

REPO = Path(__file__).resolve().parents[3]
RUN_LABEL = "test.kaito.sh/run"
A100 = "Standard_NC24ads_A100_v4"

def install_machine_crd(client: Client, timeout: float = 60.0) -> None:
    """Create (or update) the Machine CRD from config/crd and wait until it is served."""
    install_project_crds(client, (MACHINES,), files=["karpenter.sh_machines.yaml"], timeout=timeout)


def make_namespace(client: Client) -> str:
    return _make_namespace(client, "prov")


def machine_manifest(name: str, run_id: str, sku: str = A100, gpus: int = 1) -> dict:
    return {
        "apiVersion": "karpenter.sh/v1alpha5",
        "kind": "Machine",
        "metadata": {
            "name": name,
            "labels": {
                RUN_LABEL: run_id,
                "kaito.sh/workspace": "phi-3",
                "kaito.sh/workspacenamespace": "default",
                "karpenter.sh/provisioner-name": "default",
            },
        },
        "spec": {
            "machineTemplateRef": {"name": name},
            "requirements": [
                {"key": LABEL_INSTANCE_TYPE, "operator": "In", "values": [sku]},
                {"key": "karpenter.sh/provisioner-name", "operator": "In", "values": ["default"]},
                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
            ],
            "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
            "startupTaints": [
                {"key": "example.com/gpu-driver", "value": "installing", "effect": "NoSchedule"}
            ],
            "resources": {"requests": {"storage": "100Gi", "nvidia.com/gpu": str(gpus)}},
        },
    }


def condition(machine: dict, type_: str) -> dict | None:
    for cond in (machine.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return cond
    return None


def condition_is(client: Client, name: str, type_: str, status: str = "True") -> dict | None:
    machine = client.get(MACHINES, name)
    cond = condition(machine, type_)
    return machine if cond is not None and cond["status"] == status else None



def events_for(client: Client, name: str, reason: str, timeout: float = 20.0) -> list[dict]:
    """The ``reason`` Events of Machine ``name`` (recorded in "default"), waiting for one."""
    return [e for e in wait_for_events(client, "default", name, {reason}, timeout) if e["reason"] == reason]


FAST = Options(
    registration_ttl=60.0,
    launch_poll_interval=0.3,
    delete_poll_interval=0.2,
    backoff_base=0.3,
    backoff_max=2.0,
)


def config(cloud_ns: str, run_id: str, **options: Any) -> Config:
    return Config(
        cloud="fake",
        node_api="machine",  # the session's server may serve NodeClaims too (auto would pick them)
        leader_election=False,
        health_port=None,
        metrics_port=None,
        options=replace(FAST, machine_selector={RUN_LABEL: run_id}, **options),
        orphan_grace=3600.0,
        orphan_interval=3600.0,
        fake_namespace=cloud_ns,
        fake_delay=1.0,
        fake_ready_delay=0.3,
        fake_tick=0.1,
    )


@contextlib.contextmanager
def running(client: Client, cfg: Config) -> Iterator[Provisioner]:
    """A provisioner built like ``kaito-provisioner`` builds it, stopped on exit."""
    prov = build(client, cfg)
    prov.start()
    try:
        yield prov
    finally:
        prov.stop()


def fake(prov: Provisioner) -> FakeCloud:
    assert isinstance(prov.provider, FakeCloud)
    return prov.provider


def delete_machines(client: Client, run_id: str, timeout: float = 30.0) -> None:
    """Clean-up for a test whose provisioner is still running: delete its Machines, wait for them."""
    items, _ = client.list(MACHINES, label_selector=f"{RUN_LABEL}={run_id}")
    for item in items:
        client.delete(MACHINES, item["metadata"]["name"])
    for item in items:
        wait_for(
            lambda n=item["metadata"]["name"]: gone(client, MACHINES, n), timeout, "machine deleted"
        )
