"""Test helpers every integration area needs against the real API server.

Why one module: installing a CRD and waiting until it is served, making a throw-away namespace
and polling for a condition were copied into each test area; one copy keeps their behaviour
(and their failure messages) the same everywhere. Importable as ``k8s_helpers`` because
tests/conftest.py puts tests/ on sys.path.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from controller.runtime import AlreadyExists, Client, Conflict, NotFound, ResourceKind
from controller.runtime.kinds import CUSTOM_RESOURCE_DEFINITIONS, EVENTS, NAMESPACES
from hack.upstream_crds import crd_paths as upstream_crd_paths

REPO = Path(__file__).resolve().parents[1]
CRD_DIR = REPO / "config" / "crd"
CRDS = CUSTOM_RESOURCE_DEFINITIONS

T = TypeVar("T")


def wait_for(fn: Callable[[], T], timeout: float = 30.0, what: str = "condition", interval: float = 0.1) -> T:
    """Poll ``fn`` until it returns something truthy; fail with ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except NotFound as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def make_namespace(client: Client, prefix: str = "t") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    client.create(NAMESPACES, {"metadata": {"name": name}})
    return name


def wait_for_events(
    client: Client, namespace: str, name: str, reasons: set[str], timeout: float = 30.0
) -> list[dict]:
    """The Events of object ``name`` once every one of ``reasons`` is among them. The runtime's
    recorder writes Events asynchronously, so one may trail the change a test already saw."""

    def seen() -> list[dict] | None:
        items, _ = client.list(EVENTS, namespace, field_selector=f"involvedObject.name={name}")
        return items if reasons <= {e["reason"] for e in items} else None

    return wait_for(seen, timeout, what=f"events {sorted(reasons)} for {namespace}/{name}")


def gone(client: Client, kind: ResourceKind, name: str, namespace: str | None = None) -> bool:
    """True once the object no longer exists."""
    try:
        client.get(kind, name, namespace)
    except NotFound:
        return True
    return False


def served(client: Client, kind: ResourceKind) -> bool:
    """True once the API server lists ``kind`` (a new CRD takes a moment to be served)."""
    try:
        client.list(kind, "default" if kind.namespaced else None, limit=1)
        return True
    except NotFound:
        return False


def apply_crd(client: Client, crd: dict) -> None:
    """Create a CRD, or update it in place when a previous test already created it."""
    try:
        client.create(CRDS, crd)
    except AlreadyExists:
        current = client.get(CRDS, crd["metadata"]["name"])
        crd["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        with contextlib.suppress(Conflict):
            client.update(CRDS, crd)


def crd_files(files: Iterable[str] | None = None) -> list[Path]:
    """Our CRDs (config/crd) and the upstream ones (KubeRay's, Karpenter's NodeClaim, from the Go
    module cache of hack/upstream_crds.py): all of them, or those with the given file names. A fetch
    that fails raises: a test without the real schemas must fail, not skip."""
    ours = {p.name: p for p in sorted(CRD_DIR.glob("*.yaml"))}
    if files is None:
        return [*ours.values(), *upstream_crd_paths()]
    names = list(files)
    upstream = iter(upstream_crd_paths([n for n in names if n not in ours]))
    return [ours[n] if n in ours else next(upstream) for n in names]


def install_project_crds(
    client: Client, kinds: Iterable[ResourceKind], files: Iterable[str] | None = None, timeout: float = 60.0
) -> None:
    """Apply our and the upstream CRDs (all, or the named files) and wait until each of ``kinds`` is
    served."""
    for path in crd_files(files):
        apply_crd(client, yaml.safe_load(path.read_text()))
    for kind in kinds:
        wait_for(lambda k=kind: served(client, k), timeout, f"{kind.plural} served")
