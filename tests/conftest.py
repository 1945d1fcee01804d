"""Session-wide fixtures: a real kube-apiserver + etcd for every integration test.

Why one per session: starting the pair costs a few seconds; tests isolate themselves by
namespace and unique names instead. Tests that must break the server (restart, compaction)
use ``fresh_apiserver`` to get a private one. A missing Go toolchain or a failed build is a
test error, never a skip: CI must not pass by silently testing nothing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hack.controlplane.local import ControlPlane

REPO = Path(__file__).resolve().parents[1]


def _new_control_plane(tmp: Path) -> ControlPlane:
    return ControlPlane(tmp).start()


@pytest.fixture(scope="session")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The shared API server; ``.kubeconfig`` is its kubeconfig path, ``.url`` its address."""
    cp = _new_control_plane(tmp_path_factory.mktemp("controlplane"))
    os.environ.setdefault("KAITO_TEST_KUBECONFIG", str(cp.kubeconfig))
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def fresh_apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], ControlPlane]]:
    """A factory for private API servers (for tests that restart or compact them)."""
    started: list[ControlPlane] = []

    def make() -> ControlPlane:
        cp = _new_control_plane(tmp_path_factory.mktemp("controlplane"))
        started.append(cp)
        return cp

    try:
        yield make
    finally:
        for cp in started:
            cp.stop()


@pytest.fixture(scope="session")
def kube(apiserver: ControlPlane):  # type: ignore[no-untyped-def]
    """Our runtime Client for the shared server (session-wide: informers share its pool)."""
    from controller.runtime import RestClient

    client = RestClient.from_kubeconfig(str(apiserver.kubeconfig))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def api_client(apiserver: ControlPlane):  # type: ignore[no-untyped-def]
    """An official-client ApiClient for the shared server."""
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(apiserver.kubeconfig))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def namespace(api_client) -> str:  # type: ignore[no-untyped-def]
    """A fresh namespace per test (namespaces are never finalized here: no controller-manager)."""
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api_client).create_namespace({"metadata": {"name": name}})
    return name
