"""An in-memory ``Client`` for unit tests, after controller-runtime's ``client/fake``.

Why one fake, shipped with the runtime: each room's unit tests had grown its own stand-in, each
with a different subset of the API's rules (one checked resourceVersions, one answered every write
with success, one only scripted list/watch). A reconciler's unit test is only worth something if
the fake keeps the rules the real API server keeps, so they are kept once, here:

* objects live under ``objects[(plural, namespace or None, name)]``; every write bumps a global
  resourceVersion, and an ``update``/``update_status``/merge ``patch`` carrying a stale one raises
  Conflict; ``create`` of a taken name raises AlreadyExists; a missing object raises NotFound;
* ``delete`` of an object with finalizers only sets ``deletionTimestamp``; it goes once a write
  removes the last finalizer (what the API server does);
* patches: merge (RFC 7386), json (RFC 6902: test, add, replace, remove), and strategic as merge
  plus the ``$deleteFromPrimitiveList/<field>`` directive; ``subresource="status"`` touches only
  ``status``;
* ``list`` filters by namespace and label selector (=, ==, !=, in, notin, exists, !exists) and
  ``metadata.name``/``metadata.namespace`` field selectors;
* ``watch`` streams the writes made through the fake from the moment it opens; informer tests can
  instead script successive list answers and watch streams per kind (``script_lists``,
  ``script_watches``), ending in an error, a clean end, or a block until closed;
* every call is recorded in ``calls``, and ``fail``/``conflict`` inject errors into the next
  matching calls (client-go's reactors), after the call is recorded.

Not modelled: admission, defaulting, schema validation, server-side apply, garbage collection by
ownerReference, watch replay from an old resourceVersion. Those are what tests/integration (a real
kube-apiserver) is for.
"""

from __future__ import annotations

import copy
import queue
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from controller.runtime.client import EventStream
from controller.runtime.errors import AlreadyExists, ApiError, Conflict, Invalid, NotFound
from controller.runtime.kinds import ResourceKind

ObjectKey = tuple[str, str | None, str]


class Call(NamedTuple):
    """One recorded call: ``("create", "machines", "m1", None)``; list/watch also keep the
    resourceVersion they were asked for."""

    verb: str
    plural: str
    name: str | None
    namespace: str | None
    resource_version: str | None = None


@dataclass
class _Failure:
    verb: str
    error: ApiError | Exception
    plural: str | None
    name: str | None
    times: int | None  # None: every matching call

    def matches(self, call: Call) -> bool:
        return (
            self.verb in ("*", call.verb)
            and self.plural in (None, call.plural)
            and self.name in (None, call.name)
        )


# --- selectors ---------------------------------------------------------------------------------------
_SET_REQ = re.compile(r"^\s*(\S+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(selector: str) -> list[str]:
    """Split on commas that are not inside ``( )`` (set-based requirements carry commas)."""
    parts, depth, current = [], 0, ""
    for ch in selector:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def label_selector_matches(selector: str | None, labels: dict[str, str]) -> bool:
    """Kubernetes label selector syntax, as ``kubectl -l`` takes it."""
    for req in _split_selector(selector or ""):
        set_req = _SET_REQ.match(req)
        if set_req:
            key, op, values = set_req.groups()
            wanted = {v.strip() for v in values.split(",") if v.strip()}
            if (op == "in") != (key in labels and labels[key] in wanted):
                return False
        elif "!=" in req:
            key, value = (s.strip() for s in req.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in req:
            key, value = (s.strip() for s in req.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif req.startswith("!"):
            if req[1:].strip() in labels:
                return False
        elif req not in labels:
            return False
    return True


def _field_selector_matches(selector: str | None, obj: dict) -> bool:
    meta = obj.get("metadata") or {}
    for req in _split_selector(selector or ""):
        negate = "!=" in req
        key, value = (s.strip() for s in req.replace("!=", "=").replace("==", "=").split("=", 1))
        fields = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace")}
        if key not in fields:
            raise ValueError(f"the fake client cannot select on field {key!r}")
        if (fields[key] == value) == negate:
            return False
    return True


# --- patches -----------------------------------------------------------------------------------------
def merge_patch(target: dict, patch: dict) -> None:
    """RFC 7386 in place: null deletes, objects merge, everything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _strategic_patch(target: dict, patch: dict) -> None:
    """Merge, plus the one directive the tree uses: ``$deleteFromPrimitiveList/<field>``."""
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            target[field] = [v for v in target.get(field) or [] if v not in value]
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _strategic_patch(target[key], value)
        elif value is None:
            target.pop(key, None)
        else:
            target[key] = copy.deepcopy(value)


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")] if path else []


def json_patch(target: dict, ops: list[dict]) -> None:
    """RFC 6902 test/add/replace/remove in place; a failed test is a Conflict (as the server says)."""
    for op in ops:
        kind = op["op"]
        if kind not in ("test", "add", "replace", "remove"):
            raise Invalid(422, "Invalid", f"the fake client does not support json patch op {kind!r}")
        *parents, last = _pointer(op["path"])
        parent: Any = target
        for part in parents:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if kind == "test" and parent[index] != op["value"]:
                raise Conflict(409, "Conflict", f"test failed at {op['path']}")
            if kind == "add":
                parent.insert(index, copy.deepcopy(op["value"]))
            elif kind == "replace":
                parent[index] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del parent[index]
        else:
            if kind == "test" and parent.get(last) != op["value"]:
                raise Conflict(409, "Conflict", f"test failed at {op['path']}")
            if kind in ("add", "replace"):
                parent[last] = copy.deepcopy(op["value"])
            elif kind == "remove":
                parent.pop(last, None)


# --- watch streams -----------------------------------------------------------------------------------
class ScriptedStream:
    """Yields scripted events, then raises the scripted error, ends (None), or blocks until closed."""

    def __init__(self, events: list[dict], end: BaseException | str | None) -> None:
        self.events = events
        self.end = end
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[dict]:
        yield from self.events
        if isinstance(self.end, BaseException):
            raise self.end
        if self.end == "block":
            self.closed.wait()

    def close(self) -> None:
        self.closed.set()


class _LiveStream:
    """The writes made through the fake after the watch opened, until closed."""

    _CLOSED = object()

    def __init__(self, plural: str, namespace: str | None, label_selector: str | None) -> None:
        self.plural = plural
        self.namespace = namespace
        self.label_selector = label_selector
        self._events: queue.Queue = queue.Queue()
        self.closed = False

    def offer(self, plural: str, event: dict) -> None:
        meta = event["object"].get("metadata") or {}
        if plural != self.plural or (self.namespace and meta.get("namespace") != self.namespace):
            return
        if label_selector_matches(self.label_selector, meta.get("labels") or {}):
            self._events.put(copy.deepcopy(event))

    def __iter__(self) -> Iterator[dict]:
        while True:
            event = self._events.get()
            if event is self._CLOSED:
                return
            yield event

    def close(self) -> None:
        self.closed = True
        self._events.put(self._CLOSED)


# --- the client --------------------------------------------------------------------------------------
class FakeClient:
    """An in-memory ``Client`` (see the module docstring for the rules it keeps)."""

    def __init__(self) -> None:
        self.objects: dict[ObjectKey, dict] = {}
        self.calls: list[Call] = []
        # set once a watch found no scripted stream left (informer tests wait for it)
        self.all_watched = threading.Event()
        self._rv = 0
        self._failures: list[_Failure] = []
        self._lists: dict[str, list[tuple[list[dict], str]]] = {}
        self._watches: dict[str, list[tuple[list[dict], Any]]] = {}
        self._streams: list[_LiveStream] = []
        self._lock = threading.RLock()

    # --- test set-up ------------------------------------------------------------------------------
    def add(self, kind: ResourceKind, obj: dict) -> dict:
        """Put an object in place without recording a call (a fixture, the tracker's ``Add``);
        a resourceVersion it carries is kept."""
        with self._lock:
            new = self._stamped(kind, obj, keep_rv=True)
            self.objects[self._key_of(kind, new)] = new
            return copy.deepcopy(new)

    def fail(
        self,
        verb: str,
        error: Exception,
        kind: ResourceKind | None = None,
        name: str | None = None,
        times: int | None = 1,
    ) -> None:
        """Make the next ``times`` calls of ``verb`` ("*": any) on ``kind``/``name`` raise ``error``."""
        with self._lock:
            self._failures.append(_Failure(verb, error, kind.plural if kind else None, name, times))

    def conflict(
        self, verb: str = "update", kind: ResourceKind | None = None, name: str | None = None, times: int = 1
    ) -> None:
        """The next ``times`` matching writes fail as if another writer had been first."""
        self.fail(verb, Conflict(409, "Conflict", "the object has been modified"), kind, name, times)

    def script_lists(self, kind: ResourceKind, answers: list[tuple[list[dict], str]]) -> None:
        """Successive ``list`` answers (items, resourceVersion) for ``kind``; the last one repeats."""
        with self._lock:
            self._lists[kind.plural] = list(answers)

    def script_watches(self, kind: ResourceKind, scripts: list[tuple[list[dict], Any]]) -> None:
        """Successive ``watch`` streams (events, end) for ``kind``; end is an exception to raise,
        None (the server closed the stream) or "block" (until closed). Then: live streams."""
        with self._lock:
            self._watches[kind.plural] = list(scripts)

    def calls_of(self, verb: str, kind: ResourceKind | None = None) -> list[Call]:
        return [c for c in self.calls if c.verb == verb and (kind is None or c.plural == kind.plural)]

    # --- reads ------------------------------------------------------------------------------------
    def get(self, kind: ResourceKind, name: str, namespace: str | None = None) -> dict:
        with self._lock:
            self._record("get", kind, name, namespace)
            return copy.deepcopy(self._current(kind, name, namespace))

    def list(
        self,
        kind: ResourceKind,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        limit: int | None = None,
    ) -> tuple[list[dict], str]:
        with self._lock:
            self._record("list", kind, None, namespace, resource_version)
            scripted = self._lists.get(kind.plural)
            if scripted:
                items, rv = scripted.pop(0) if len(scripted) > 1 else scripted[0]
                return copy.deepcopy(items), rv
            items = [
                copy.deepcopy(obj)
                for (plural, ns, _), obj in sorted(self.objects.items(), key=lambda kv: str(kv[0]))
                if plural == kind.plural
                and (not namespace or not kind.namespaced or ns == namespace)
                and label_selector_matches(label_selector, (obj.get("metadata") or {}).get("labels") or {})
                and _field_selector_matches(field_selector, obj)
            ]
            return items, str(self._rv)

    def watch(
        self,
        kind: ResourceKind,
        namespace: str | None = None,
        resource_version: str | None = None,
        timeout_seconds: int | None = 300,
        allow_bookmarks: bool = True,
        label_selector: str | None = None,
        field_selector: str | None = None,
        read_timeout: float | None = None,
    ) -> EventStream:
        with self._lock:
            self._record("watch", kind, None, namespace, resource_version)
            scripts = self._watches.get(kind.plural)
            if scripts:
                events, end = scripts.pop(0)
                return ScriptedStream(events, end)
            self.all_watched.set()
            stream = _LiveStream(kind.plural, namespace if kind.namespaced else None, label_selector)
            self._streams.append(stream)
            return stream

    # --- writes -----------------------------------------------------------------------------------
    def create(self, kind: ResourceKind, obj: dict, namespace: str | None = None) -> dict:
        with self._lock:
            namespace = namespace or (obj.get("metadata") or {}).get("namespace")
            name = (obj.get("metadata") or {}).get("name")
            self._record("create", kind, name, namespace)
            new = copy.deepcopy(obj)
            if kind.namespaced and namespace:
                new.setdefault("metadata", {})["namespace"] = namespace
            key = self._key_of(kind, new)
            if key in self.objects:
                raise AlreadyExists(409, "AlreadyExists", f'{kind.plural} "{name}" already exists')
            new = self._stamped(kind, new)
            self.objects[key] = new
            self._notify(kind, "ADDED", new)
            return copy.deepcopy(new)

    def update(self, kind: ResourceKind, obj: dict) -> dict:
        """The whole object replaces the stored one (status included: the fake keeps no schema)."""
        return self._put("update", kind, obj)

    def update_status(self, kind: ResourceKind, obj: dict) -> dict:
        return self._put("update_status", kind, obj)

    def patch(
        self,
        kind: ResourceKind,
        name: str,
        patch: Any,
        namespace: str | None = None,
        patch_type: str = "merge",
        subresource: str | None = None,
        field_manager: str | None = None,
        force: bool | None = None,
    ) -> dict:
        with self._lock:
            self._record("patch", kind, name, namespace)
            new = copy.deepcopy(self._current(kind, name, namespace))
            if patch_type == "json":
                json_patch(new, patch)
            elif patch_type in ("merge", "strategic"):
                wanted_rv = (patch.get("metadata") or {}).get("resourceVersion")
                if wanted_rv is not None and wanted_rv != new["metadata"].get("resourceVersion"):
                    raise Conflict(409, "Conflict", "the object has been modified")
                if subresource == "status":
                    patch = {"status": patch.get("status")} if "status" in patch else {}
                (merge_patch if patch_type == "merge" else _strategic_patch)(new, patch)
            else:
                raise ValueError(f"the fake client does not support patch_type {patch_type!r}")
            return self._store(kind, new)

    def delete(
        self,
        kind: ResourceKind,
        name: str,
        namespace: str | None = None,
        propagation_policy: str | None = "Background",
        preconditions: dict | None = None,
    ) -> bool:
        with self._lock:
            self._record("delete", kind, name, namespace)
            key = (kind.plural, namespace if kind.namespaced else None, name)
            current = self.objects.get(key)
            if current is None:
                return False
            wanted_rv = (preconditions or {}).get("resourceVersion")
            wanted_uid = (preconditions or {}).get("uid")
            meta = current["metadata"]
            if (wanted_rv and wanted_rv != meta.get("resourceVersion")) or (
                wanted_uid and wanted_uid != meta.get("uid")
            ):
                raise Conflict(409, "Conflict", "precondition failed")
            if meta.get("finalizers"):
                if not meta.get("deletionTimestamp"):
                    new = copy.deepcopy(current)
                    new["metadata"]["deletionTimestamp"] = _now()
                    self._store(kind, new)
                return True
            del self.objects[key]
            self._notify(kind, "DELETED", current)
            return True

    # --- internals --------------------------------------------------------------------------------
    def _record(
        self, verb: str, kind: ResourceKind, name: str | None, namespace: str | None, rv: str | None = None
    ) -> None:
        call = Call(verb, kind.plural, name, namespace if kind.namespaced else None, rv)
        self.calls.append(call)
        for failure in self._failures:
            if failure.matches(call) and failure.times != 0:
                if failure.times is not None:
                    failure.times -= 1
                raise failure.error

    def _put(self, verb: str, kind: ResourceKind, obj: dict) -> dict:
        """PUT of the object (update) or of its status only (update_status)."""
        with self._lock:
            meta = obj["metadata"]
            self._record(verb, kind, meta["name"], meta.get("namespace"))
            current = self._checked(kind, obj)
            if verb == "update_status":
                new = copy.deepcopy(current)
                new["status"] = copy.deepcopy(obj.get("status"))
            else:
                new = copy.deepcopy(obj)
                new["metadata"]["uid"] = current["metadata"].get("uid")
            return self._store(kind, new)

    def _key_of(self, kind: ResourceKind, obj: dict) -> ObjectKey:
        meta = obj["metadata"]
        return (kind.plural, meta.get("namespace") if kind.namespaced else None, meta["name"])

    def _current(self, kind: ResourceKind, name: str, namespace: str | None) -> dict:
        try:
            return self.objects[(kind.plural, namespace if kind.namespaced else None, name)]
        except KeyError:
            raise NotFound(404, "NotFound", f'{kind.plural} "{name}" not found') from None

    def _checked(self, kind: ResourceKind, obj: dict) -> dict:
        """The stored object ``obj`` replaces; Conflict when obj carries a stale resourceVersion."""
        meta = obj["metadata"]
        current = self._current(kind, meta["name"], meta.get("namespace"))
        rv = meta.get("resourceVersion")
        if rv and rv != current["metadata"].get("resourceVersion"):
            raise Conflict(409, "Conflict", "the object has been modified; please apply your changes "
                           "to the latest version and try again")
        return current

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _stamped(self, kind: ResourceKind, obj: dict, keep_rv: bool = False) -> dict:
        new = {"apiVersion": kind.api_version, "kind": kind.kind, **copy.deepcopy(obj)}
        meta = new.setdefault("metadata", {})
        rv = meta.get("resourceVersion") if keep_rv else None
        if rv and str(rv).isdigit():
            self._rv = max(self._rv, int(rv))
        meta["resourceVersion"] = rv or self._next_rv()
        meta.setdefault("uid", f"uid-{meta['resourceVersion']}")
        return new

    def _store(self, kind: ResourceKind, new: dict) -> dict:
        """Write back a changed object: a new resourceVersion, or gone once deleting and unfinalized."""
        key = self._key_of(kind, new)
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self.objects.pop(key, None)
            self._notify(kind, "DELETED", new)
            return copy.deepcopy(new)
        new.setdefault("apiVersion", kind.api_version)
        new.setdefault("kind", kind.kind)
        meta["resourceVersion"] = self._next_rv()
        self.objects[key] = new
        self._notify(kind, "MODIFIED", new)
        return copy.deepcopy(new)

    def _notify(self, kind: ResourceKind, type_: str, obj: dict) -> None:
        self._streams = [s for s in self._streams if not s.closed]
        for stream in self._streams:
            stream.offer(kind.plural, {"type": type_, "object": obj})


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
