"""The object-reconciler adapter: fetch from the cache, parse into the model, call a typed function.

Why: every reconciler began the same way (look the key up in the informer's store; gone -> clean
up or nothing; parse into its pydantic model; an object that does not parse is logged and skipped,
never retried in a loop, since only a change to it can help and a change wakes the controller
anyway). controller-runtime's typed ``reconcile.ObjectReconciler`` does that once; so does this,
and a reconciler then only says what to do with one well-formed object.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from controller.runtime.controller import Request, Result
from controller.runtime.store import Store

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class ObjectReconciler(Generic[M]):
    """A ``Reconciler`` over ``store`` that hands each parsed object to ``reconcile``.

    ``reconcile(obj, raw)`` gets the model and the cached dict it was parsed from (shared with the
    cache: read it, never mutate it); ``gone(request)`` runs when the key is not in the store (an
    object deleted, e.g. to release what it held); ``selects(raw)`` filters objects that are not
    ours before parsing (a predicate); ``on_invalid(raw, error)`` runs, after the warning is logged,
    for an object that does not parse (e.g. to record an Event). Any of them may return None for
    ``Result()``. Exceptions propagate, so the controller's rate-limited requeue applies.
    """

    def __init__(
        self,
        store: Store,
        model: type[M],
        reconcile: Callable[[M, dict], Result | None],
        gone: Callable[[Request], Result | None] | None = None,
        selects: Callable[[dict], bool] | None = None,
        on_invalid: Callable[[dict, ValidationError], None] | None = None,
    ) -> None:
        self.store = store
        self.model = model
        self._reconcile = reconcile
        self._gone = gone
        self._selects = selects
        self._on_invalid = on_invalid

    def reconcile(self, request: Request) -> Result:
        raw = self.store.get(request.key)
        if raw is None:
            return (self._gone(request) if self._gone is not None else None) or Result()
        if self._selects is not None and not self._selects(raw):
            return Result()
        try:
            # a copy: pydantic may keep references into dict fields, and the cache's dict is shared
            obj = self.model.model_validate(copy.deepcopy(raw))
        except ValidationError as exc:
            log.warning("%s %s does not parse, skipping: %s", self.model.__name__, request.key, exc)
            if self._on_invalid is not None:
                self._on_invalid(raw, exc)
            return Result()
        return self._reconcile(obj, raw) or Result()
