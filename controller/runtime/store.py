"""A thread-safe, indexed object cache, ported from client-go tools/cache (store.go,
thread_safe_store.go, index.go).

Why indexes: reconcilers ask "which Machines belong to this Workspace?" on every pass; scanning
the whole cache each time is O(n) per reconcile. An index maps an index value (a namespace, an
owner uid, a label value) to the set of keys, kept in step with every add/update/delete.

Objects are plain dicts as the API server returns them; the store never copies them, so callers
must treat what they get as read-only (deepcopy before mutating), exactly as with client-go.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

IndexFunc = Callable[[dict], Iterable[str]]

NAMESPACE_INDEX = "namespace"
OWNER_UID_INDEX = "owner-uid"
LABEL_INDEX_PREFIX = "label:"


def object_key(obj: dict | DeletedFinalStateUnknown) -> str:
    """client-go's MetaNamespaceKeyFunc: "namespace/name" or "name" for cluster-scoped objects."""
    if isinstance(obj, DeletedFinalStateUnknown):
        return obj.key
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise ValueError("object has no metadata.name")
    namespace = meta.get("namespace")
    return f"{namespace}/{name}" if namespace else name


def split_key(key: str) -> tuple[str | None, str]:
    """Inverse of object_key: (namespace or None, name)."""
    if "/" in key:
        namespace, name = key.split("/", 1)
        return namespace, name
    return None, key


@dataclass(frozen=True)
class DeletedFinalStateUnknown:
    """Handed to on_delete when a delete was missed (the watch was down) and found only by a
    relist: `obj` is the last state the cache saw, which may be stale."""

    key: str
    obj: Any


def namespace_index(obj: dict) -> list[str]:
    namespace = (obj.get("metadata") or {}).get("namespace")
    return [namespace] if namespace else []


def owner_uid_index(obj: dict) -> list[str]:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return [ref["uid"] for ref in refs if ref.get("uid")]


def label_index(label_key: str) -> IndexFunc:
    def index(obj: dict) -> list[str]:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        value = labels.get(label_key)
        return [value] if value is not None else []

    return index


class Store:
    """Key -> object map plus named indexes; every method is safe to call from any thread."""

    def __init__(self, indexers: dict[str, IndexFunc] | None = None) -> None:
        self._lock = threading.RLock()
        self._items: dict[str, dict] = {}
        self._indexers: dict[str, IndexFunc] = {
            NAMESPACE_INDEX: namespace_index,
            OWNER_UID_INDEX: owner_uid_index,
        }
        self._indexers.update(indexers or {})
        self._indices: dict[str, dict[str, set[str]]] = {name: {} for name in self._indexers}

    # --- indexes -----------------------------------------------------------------------------
    def add_index(self, name: str, func: IndexFunc) -> None:
        """Add (or replace) an index; existing objects are indexed right away."""
        with self._lock:
            self._indexers[name] = func
            self._indices[name] = {}
            for key, obj in self._items.items():
                self._index_one(name, key, obj)

    def add_label_index(self, label_key: str) -> str:
        """Index objects by the value of one label. Query it as by_index(label_key, value); the
        alias "label:<label_key>" works too. Returns the index name."""
        with self._lock:
            if label_key not in self._indexers:
                self.add_index(label_key, label_index(label_key))
        return label_key

    def by_index(self, index_name: str, value: str) -> list[dict]:
        """Objects whose index function yields `value`; KeyError for an unknown index."""
        with self._lock:
            if index_name not in self._indexers and index_name.startswith(LABEL_INDEX_PREFIX):
                index_name = index_name[len(LABEL_INDEX_PREFIX) :]
            if index_name not in self._indexers:
                raise KeyError(f"no index named {index_name!r}")
            keys = self._indices[index_name].get(value, set())
            return [self._items[k] for k in sorted(keys)]

    def index_keys(self, index_name: str, value: str) -> list[str]:
        with self._lock:
            return sorted(self._indices[index_name].get(value, set()))

    # --- CRUD --------------------------------------------------------------------------------
    def add(self, obj: dict) -> None:
        self.update(obj)

    def update(self, obj: dict) -> dict | None:
        """Insert or replace; returns the previous object (None when new)."""
        key = object_key(obj)
        with self._lock:
            old = self._items.get(key)
            if old is not None:
                self._unindex(key, old)
            self._items[key] = obj
            for name in self._indexers:
                self._index_one(name, key, obj)
            return old

    def delete(self, obj_or_key: dict | str | DeletedFinalStateUnknown) -> dict | None:
        """Remove by object or key; returns what was stored (None when absent)."""
        key = obj_or_key if isinstance(obj_or_key, str) else object_key(obj_or_key)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._unindex(key, old)
            return old

    def replace(self, objs: Iterable[dict]) -> None:
        """Swap the whole content at once (used after a relist)."""
        with self._lock:
            self._items = {}
            self._indices = {name: {} for name in self._indexers}
            for obj in objs:
                self.update(obj)

    def get(self, key: str) -> dict | None:
        with self._lock:
            return self._items.get(key)

    def get_by_name(self, namespace: str | None, name: str) -> dict | None:
        return self.get(f"{namespace}/{name}" if namespace else name)

    def list(self) -> list[dict]:
        with self._lock:
            return list(self._items.values())

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._items.keys())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    # --- internals ---------------------------------------------------------------------------
    def _index_one(self, name: str, key: str, obj: dict) -> None:
        index = self._indices.setdefault(name, {})
        for value in set(self._indexers[name](obj)):
            index.setdefault(value, set()).add(key)

    def _unindex(self, key: str, obj: dict) -> None:
        for name, func in self._indexers.items():
            index = self._indices[name]
            for value in set(func(obj)):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]
