"""Fixtures for the provisioner against the real kube-apiserver: a runtime Client with the Machine
CRD installed (once per session), a namespace for each test's fake-cloud inventory, and a label
that marks the test's Machines so its provisioner leaves every other Machine alone."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator

import pytest
from prov_it_helpers import install_machine_crd, make_namespace

from controller.runtime import Client


@pytest.fixture(autouse=True)
def _quiet_insecure_tls() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")
        yield


@pytest.fixture(scope="session")
def prov_client(apiserver) -> Iterator[Client]:  # type: ignore[no-untyped-def]
    client = Client.from_kubeconfig(str(apiserver.kubeconfig))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")
        install_machine_crd(client)
    yield client
    client.close()


@pytest.fixture
def cloud_ns(prov_client: Client) -> str:
    return make_namespace(prov_client)


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:8]
