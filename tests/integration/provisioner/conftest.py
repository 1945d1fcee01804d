"""Fixtures for the provisioner against the real kube-apiserver: a runtime Client with the Machine
CRD installed (once per session), a namespace for each test's fake-cloud inventory, and a label
that marks the test's Machines so its provisioner leaves every other Machine alone."""

from __future__ import annotations

import uuid

import pytest
from prov_it_helpers import install_machine_crd, make_namespace

from controller.runtime import Client


@pytest.fixture(scope="session")
def prov_client(kube: Client) -> Client:
    install_machine_crd(kube)
    return kube


@pytest.fixture
def cloud_ns(prov_client: Client) -> str:
    return make_namespace(prov_client)


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:8]
