"""Fixtures for the workspace controller against the real kube-apiserver: a runtime Client with the
project's CRDs installed (once per session) and a fresh namespace per test."""

from __future__ import annotations

import pytest
from ws_it_helpers import install_crds, make_namespace

from controller.runtime import Client


@pytest.fixture(scope="session")
def ws_client(kube: Client) -> Client:
    install_crds(kube)
    return kube


@pytest.fixture
def ws_ns(ws_client: Client) -> str:
    return make_namespace(ws_client)


@pytest.fixture
def kubeconfig(apiserver) -> str:  # type: ignore[no-untyped-def]
    return str(apiserver.kubeconfig)
