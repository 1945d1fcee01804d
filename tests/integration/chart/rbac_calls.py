"""The API calls a process's code makes, read from its source: what its RBAC must grant, and all
it may grant.

Why a static scan rather than a recording of one scenario: a scenario covers the paths someone
thought of, a scan covers every call site, including the error paths (an AlreadyExists that
turns into a GET, a deletion that lists authoritatively). What it reads:

- ``<...>client.<verb>(KIND, ...)`` where ``KIND`` is a module-level ``ResourceKind`` constant,
  ``update_status`` and ``subresource="status"`` counting on ``<plural>/status``;
- helpers that take a ``kind`` parameter and call the client with it (``_create_or_update``,
  ``_get_or_none``), resolved to the constant each call site passes, to a fixpoint;
- ``<...>.informer(KIND)``: an informer lists and watches (its own calls, on ``self.kind``, are
  counted there);
- ``<...>api.kind`` (a ``controller.api.nodeapi.NodeAPI``): the node objects, which are either
  NodeClaims or Machines as the cluster serves, so such a call needs its verb on both.

Every call site must resolve: a client call on something that is not a known constant or a
helper's ``kind`` is an error (``Unresolved``), so a new call cannot slip past the test.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass, field
from pathlib import Path

from controller.api.nodeapi import BY_NAME as NODE_APIS
from controller.runtime.kinds import ResourceKind

VERBS = {"get", "list", "watch", "create", "update", "update_status", "patch", "delete"}
REPO = Path(__file__).resolve().parents[3]

Grant = tuple[str, str, str]  # (apiGroup, resource, verb)


class Unresolved(AssertionError):
    """A client call whose kind the scan cannot name."""


@dataclass
class _Module:
    path: Path
    tree: ast.Module
    namespace: dict


@dataclass
class Scan:
    grants: set[Grant] = field(default_factory=set)
    sites: dict[Grant, list[str]] = field(default_factory=dict)

    def add(self, kind: ResourceKind, verb: str, subresource: str | None, where: str) -> None:
        if verb == "update_status":
            verb, subresource = "update", "status"
        resource = f"{kind.plural}/{subresource}" if subresource else kind.plural
        grant = (kind.group, resource, verb)
        self.grants.add(grant)
        self.sites.setdefault(grant, []).append(where)


def _receiver(node: ast.expr) -> str:
    return ast.unparse(node)


def _is_client(node: ast.expr) -> bool:
    return _receiver(node).split(".")[-1].lstrip("_") == "client"


def _subresource(call: ast.Call) -> str | None:
    for kw in call.keywords:
        if kw.arg == "subresource" and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def _load(paths: list[Path]) -> list[_Module]:
    modules = []
    for path in paths:
        rel = path.relative_to(REPO).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        modules.append(_Module(path, ast.parse(path.read_text()), vars(importlib.import_module(name))))
    return modules


def _functions(tree: ast.Module):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _helpers(modules: list[_Module]) -> dict[str, set[tuple[str, str | None]]]:
    """Functions with a ``kind`` parameter -> the (verb, subresource) they apply to it."""
    direct: dict[str, set[tuple[str, str | None]]] = {}
    calls: dict[str, set[str]] = {}
    for mod in modules:
        for fn in _functions(mod.tree):
            if "kind" not in [a.arg for a in fn.args.args]:
                continue
            verbs, callees = direct.setdefault(fn.name, set()), calls.setdefault(fn.name, set())
            for node in ast.walk(fn):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args):
                    continue
                first = node.args[0]
                if not (isinstance(first, ast.Name) and first.id == "kind"):
                    continue
                if node.func.attr in VERBS and _is_client(node.func.value):
                    verbs.add((node.func.attr, _subresource(node)))
                else:
                    callees.add(node.func.attr)
    changed = True
    while changed:  # a helper calling a helper with its kind
        changed = False
        for name, callees in calls.items():
            for callee in callees:
                extra = direct.get(callee, set()) - direct[name]
                if extra:
                    direct[name] |= extra
                    changed = True
    return {name: verbs for name, verbs in direct.items() if verbs}


def scan(paths: list[Path], skip_functions: dict[str, str] | None = None) -> Scan:
    """The grants the code in ``paths`` needs. ``skip_functions``: function name -> why its calls
    do not run in the deployment being checked."""
    skip = skip_functions or {}
    modules = _load(paths)
    helpers = _helpers(modules)
    out = Scan()
    for mod in modules:
        skipped = {id(n) for fn in _functions(mod.tree) if fn.name in skip for n in ast.walk(fn)}
        own_kind = _self_kind(mod.tree)
        for node in ast.walk(mod.tree):
            if id(node) in skipped or not isinstance(node, ast.Call):
                continue
            if not isinstance(node.func, ast.Attribute):
                continue
            attr, where = node.func.attr, f"{mod.path.relative_to(REPO)}:{node.lineno}"
            client_call = attr in VERBS and _is_client(node.func.value)
            if not (client_call or attr in helpers or attr == "informer"):
                continue
            first = node.args[0] if node.args else None
            if first is not None and ast.unparse(first) == "self.kind" and own_kind is not None:
                first = own_kind  # e.g. the Machine reconciler's ``self.kind = api.kind``
            if first is not None and ast.unparse(first) in ("kind", "self.kind"):
                continue  # a helper's or an informer's own kind: counted where it is called or made
            kinds = _kinds_of(first, mod.namespace)
            if not kinds:
                if client_call or attr == "informer":
                    raise Unresolved(f"{where}: {ast.unparse(node)[:120]}: cannot name the kind")
                continue
            for kind in kinds:
                if attr == "informer":
                    out.add(kind, "list", None, where)
                    out.add(kind, "watch", None, where)
                elif client_call:
                    out.add(kind, attr, _subresource(node), where)
                else:
                    for verb, sub in helpers[attr]:
                        out.add(kind, verb, sub, where)
    return out


def _self_kind(tree: ast.Module) -> ast.expr | None:
    """What ``self.kind = ...`` assigns in this module, unless it is a bare parameter (the
    informer's own kind, counted where the informer is made)."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and ast.unparse(node.targets[0]) == "self.kind" and ast.unparse(node.value) != "kind"):
            return node.value
    return None


def _kinds_of(first: ast.expr | None, namespace: dict) -> list[ResourceKind]:
    """The kinds a call's first argument can name: a module constant, or a NodeAPI's kind."""
    if isinstance(first, ast.Name) and isinstance(namespace.get(first.id), ResourceKind):
        return [namespace[first.id]]
    if first is not None and ast.unparse(first).endswith(("api.kind", "node_api.kind")):
        return [api.kind for api in NODE_APIS.values()]
    return []


def granted(rules: list[dict]) -> set[Grant]:
    """The (apiGroup, resource, verb) triples a Role's or ClusterRole's rules grant."""
    return {(g, r, v) for rule in rules for g in rule.get("apiGroups", []) for r in rule.get("resources", [])
            for v in rule.get("verbs", [])}


def python_files(*roots: str) -> list[Path]:
    files: list[Path] = []
    for root in roots:
        path = REPO / root
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files
