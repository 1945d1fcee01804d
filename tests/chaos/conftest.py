"""Chaos tests: the operator's processes on a private, real etcd + kube-apiserver, with faults.

Every test here is bounded (explicit timeouts on every wait), self-stopping (processes are stopped
in ``finally``/fixture teardown) and loopback-only. Seeds are fixed (``KAITO_CHAOS_SEED`` overrides)
so a failure can be replayed. The pieces (control plane with CRDs, controller and provisioner
processes, a status-only KubeRay) are in ``hack/bench/controller_harness.py``, shared with the
scale benchmark.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from chaos_helpers import Bed


@pytest.fixture(autouse=True)
def _quiet_insecure_tls() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")
        yield


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    b = Bed(tmp_path)
    try:
        yield b
    finally:
        b.close()
