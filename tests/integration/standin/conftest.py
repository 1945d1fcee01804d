"""Fixtures for the KubeRay stand-in: the real kube-apiserver with the RayService CRD, and ONE real
local Ray head per test module (starting Ray costs ~10 s of a shared 2-core machine)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from standin_helpers import HERE, install_rayservice_crd

from controller.api.kinds import RAYSERVICES
from controller.runtime.client import Client

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="module")
def rs_client(kube: Client) -> Client:
    install_rayservice_crd(kube)
    return kube


@pytest.fixture(scope="module")
def standin(rs_client: Client, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The stand-in in-process (all namespaces) on its own Ray head; the echo app is importable."""
    from hack.kuberay_standin.ray_head import RayHead
    from hack.kuberay_standin.standin import Standin

    log_dir = tmp_path_factory.mktemp("standin")
    head = RayHead(num_cpus=2, python_path=[str(HERE)], log_path=log_dir / "ray-start.log")
    # worker nodes off: these tests are about status and Serve, and a Ray node per echo RayService
    # would cost seconds of a 2-core machine each (multi-node: test_workspace_standin_multinode_it.py)
    st = Standin(rs_client, head, poll_interval=1.0, worker_nodes=False).start()
    try:
        yield st
    finally:
        st.stop()


@pytest.fixture
def rs_namespace(namespace: str, rs_client: Client) -> Iterator[str]:
    """A fresh namespace whose RayServices are deleted after the test, so apps do not pile up on the
    module's Ray head (every test after would pay for them on a 2-core machine)."""
    yield namespace
    items, _ = rs_client.list(RAYSERVICES, namespace)
    for item in items:
        rs_client.delete(RAYSERVICES, item["metadata"]["name"], namespace)
