"""Fixtures for controller/runtime against the real kube-apiserver: a runtime Client with the
test CRD installed, and a fresh namespace per test."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from rt_helpers import install_widget_crd, make_namespace

from controller.runtime import Client


@pytest.fixture(autouse=True)
def _quiet_insecure_tls() -> Iterator[None]:
    """The local apiserver uses a self-signed cert with insecure-skip-tls-verify; urllib3 warns per call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")
        yield


@pytest.fixture(scope="session")
def rt_client(apiserver) -> Iterator[Client]:  # type: ignore[no-untyped-def]
    client = Client.from_kubeconfig(str(apiserver.kubeconfig))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")
        install_widget_crd(client)
    yield client
    client.close()


@pytest.fixture
def ns(rt_client: Client) -> str:
    return make_namespace(rt_client)
