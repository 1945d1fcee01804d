"""The rooms of docs/ARCHITECTURE.md, checked: which way imports run, read from the source's AST.

Why a test: "controller/runtime knows no Workspace" and "only the controller's main wires the
webhook" are easy to break with one convenient import; this fails on the import that does it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at top level) for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(n) for n in tree.body}
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, id(node) in top))
    return found


def _room(room: str) -> list[Path]:
    return sorted((REPO / room).rglob("*.py"))


def _offenders(room: str, forbidden: tuple[str, ...]) -> list[str]:
    prefixes = tuple(f + "." for f in forbidden)
    return [f"{path.relative_to(REPO)} imports {module}" for path in _room(room)
            for module, _ in _imports(path) if module in forbidden or module.startswith(prefixes)]


def test_the_check_sees_an_import() -> None:
    assert any("controller.api" in o for o in _offenders("controller/workspace", ("controller.api",)))


@pytest.mark.parametrize(("room", "forbidden"), [
    # the generic library knows no kind of ours and no other room
    ("controller/runtime", ("controller.api", "controller.workspace", "controller.webhook", "provisioner",
                            "rayserve", "presets")),
    # the API room (models, kinds, validation rules) is below every reconciler and the webhook
    ("controller/api", ("controller.workspace", "controller.webhook", "provisioner")),
    # the reconciler uses the rules in controller.api, never the webhook's server code
    ("controller/workspace", ("controller.webhook", "provisioner")),
    ("provisioner", ("controller.workspace", "controller.webhook", "rayserve")),
    # the data plane runs in the Ray image without any Kubernetes code
    ("rayserve", ("controller", "provisioner", "kubernetes")),
    ("presets", ("controller", "provisioner", "rayserve", "kubernetes")),
])
def test_imports_run_one_way(room: str, forbidden: tuple[str, ...]) -> None:
    assert _offenders(room, forbidden) == []


def test_only_the_controller_main_wires_the_webhook() -> None:
    rooms = ("controller", "provisioner", "rayserve", "presets", "hack")
    users = {p.relative_to(REPO).as_posix() for room in rooms for p in _room(room)
             if any(m == "controller.webhook" or m.startswith("controller.webhook.") for m, _ in _imports(p))}
    assert {u for u in users if not u.startswith("controller/webhook/")} == {"controller/main.py"}


def test_no_lazy_imports_in_the_reconciler_room() -> None:
    """Imports inside functions hid what a module needs (and which preset data it read)."""
    lazy = [f"{p.relative_to(REPO)} imports {m} inside a function"
            for p in _room("controller/workspace") for m, top in _imports(p)
            if not top and not m.startswith("typing")]
    assert lazy == []
