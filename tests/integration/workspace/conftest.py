"""Fixtures for the workspace controller against the real kube-apiserver: a runtime Client with the
project's CRDs installed (once per session) and a fresh namespace per test."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from ws_it_helpers import install_crds, make_namespace

from controller.runtime import Client


@pytest.fixture(autouse=True)
def _quiet_insecure_tls() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")
        yield


@pytest.fixture(scope="session")
def ws_client(apiserver) -> Iterator[Client]:  # type: ignore[no-untyped-def]
    client = Client.from_kubeconfig(str(apiserver.kubeconfig))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")
        install_crds(client)
    yield client
    client.close()


@pytest.fixture
def ws_ns(ws_client: Client) -> str:
    return make_namespace(ws_client)


@pytest.fixture
def kubeconfig(apiserver) -> str:  # type: ignore[no-untyped-def]
    return str(apiserver.kubeconfig)
