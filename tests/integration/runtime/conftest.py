"""Fixtures for controller/runtime against the real kube-apiserver: a runtime Client with the
test CRD installed, and a fresh namespace per test."""

from __future__ import annotations

import pytest
from rt_helpers import install_widget_crd, make_namespace

from controller.runtime import Client


@pytest.fixture(scope="session")
def rt_client(kube: Client) -> Client:
    install_widget_crd(kube)
    return kube


@pytest.fixture
def ns(rt_client: Client) -> str:
    return make_namespace(rt_client)
