"""An in-memory stand-in for ``controller.runtime.Client``, for the fake cloud's pure logic.

Why: the fake cloud's boot sequence is driven by a clock; stepping it by hand against a dict is
fast and exact. Its behaviour against the real API server is covered by the integration tests.
Only what the fake cloud and the reconciler use is implemented: get/list (equality label
selectors)/create/update/update_status (resourceVersion checked)/patch (merge, and json
"test"+"replace"; a resourceVersion in a merge patch is a precondition)/delete, with the
runtime's error types.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from controller.runtime.client import AlreadyExists, Conflict, NotFound, ResourceKind


def _merge(target: dict, patch: dict) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class MemoryClient:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str | None, str], dict] = {}
        self._rv = itertools.count(1)

    def _key(self, kind: ResourceKind, name: str, namespace: str | None) -> tuple[str, str | None, str]:
        return (kind.plural, namespace if kind.namespaced else None, name)

    def get(self, kind: ResourceKind, name: str, namespace: str | None = None) -> dict:
        try:
            return copy.deepcopy(self.objects[self._key(kind, name, namespace)])
        except KeyError:
            raise NotFound(404, "NotFound", f"{kind.plural} {name} not found") from None

    def list(
        self, kind: ResourceKind, namespace: str | None = None, label_selector: str | None = None, **_: Any
    ) -> tuple[list[dict], str]:
        wanted = dict(part.split("=", 1) for part in label_selector.split(",")) if label_selector else {}
        items = []
        for (plural, ns, _name), obj in self.objects.items():
            if plural != kind.plural or (namespace and ns != namespace):
                continue
            labels = obj["metadata"].get("labels") or {}
            if all(labels.get(k) == v for k, v in wanted.items()):
                items.append(copy.deepcopy(obj))
        return items, str(next(self._rv))

    def create(self, kind: ResourceKind, obj: dict, namespace: str | None = None) -> dict:
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        key = self._key(kind, meta["name"], namespace or meta.get("namespace"))
        if key in self.objects:
            raise AlreadyExists(409, "AlreadyExists", f"{meta['name']} exists")
        meta["resourceVersion"] = str(next(self._rv))
        meta.setdefault("uid", f"uid-{meta['resourceVersion']}")
        self.objects[key] = obj
        return copy.deepcopy(obj)

    def update(self, kind: ResourceKind, obj: dict, subresource: str | None = None) -> dict:
        meta = obj["metadata"]
        key = self._key(kind, meta["name"], meta.get("namespace"))
        current = self.objects.get(key)
        if current is None:
            raise NotFound(404, "NotFound", meta["name"])
        if meta.get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", "stale resourceVersion")
        new = copy.deepcopy(obj)
        if subresource == "status":
            new = {**copy.deepcopy(current), "status": new.get("status")}
        new["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects[key] = new
        return copy.deepcopy(new)

    def update_status(self, kind: ResourceKind, obj: dict) -> dict:
        return self.update(kind, obj, subresource="status")

    def patch(
        self,
        kind: ResourceKind,
        name: str,
        patch: Any,
        namespace: str | None = None,
        patch_type: str = "merge",
        subresource: str | None = None,
    ) -> dict:
        key = self._key(kind, name, namespace)
        if key not in self.objects:
            raise NotFound(404, "NotFound", name)
        obj = self.objects[key]
        if patch_type == "merge":
            wanted_rv = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted_rv is not None and wanted_rv != obj["metadata"]["resourceVersion"]:
                raise Conflict(409, "Conflict", "stale resourceVersion")
            _merge(obj, patch)
        elif patch_type == "json":
            for op in patch:
                parts = op["path"].strip("/").split("/")
                parent = obj
                for part in parts[:-1]:
                    parent = parent.setdefault(part, {})
                if op["op"] == "test" and parent.get(parts[-1]) != op["value"]:
                    raise Conflict(409, "Conflict", f"test failed at {op['path']}")
                if op["op"] in ("replace", "add"):
                    parent[parts[-1]] = copy.deepcopy(op["value"])
        else:
            raise ValueError(patch_type)
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(obj)

    def delete(self, kind: ResourceKind, name: str, namespace: str | None = None, **_: Any) -> bool:
        return self.objects.pop(self._key(kind, name, namespace), None) is not None
