"""ObjectReconciler: fetch from the store, parse into the model, skip what does not parse."""

from __future__ import annotations

import logging

import pytest
from pydantic import BaseModel, ValidationError

from controller.runtime import ObjectReconciler, Request, Result, Store


class Meta(BaseModel):
    name: str
    namespace: str


class Widget(BaseModel):
    metadata: Meta
    size: int


def widget(name: str, size: object = 1, **labels: str) -> dict:
    return {"metadata": {"name": name, "namespace": "ns", "labels": labels}, "size": size}


def test_parsed_objects_reach_the_typed_function_with_their_cached_dict() -> None:
    store = Store()
    store.add(widget("a", 3))
    seen: list[tuple[Widget, dict]] = []

    def reconcile(w: Widget, raw: dict) -> Result:
        seen.append((w, raw))
        return Result(requeue_after=7.0)

    rec = ObjectReconciler(store, Widget, reconcile)
    assert rec.reconcile(Request("ns", "a")) == Result(requeue_after=7.0)
    [(w, raw)] = seen
    assert w.size == 3 and raw is store.get("ns/a")  # the model is a copy; raw is the cache's
    rec = ObjectReconciler(store, Widget, lambda w, raw: None)
    assert rec.reconcile(Request("ns", "a")) == Result()  # None means success


def test_a_missing_object_goes_to_gone_or_to_nothing() -> None:
    store = Store()
    gone: list[Request] = []
    calls: list[Widget] = []
    rec = ObjectReconciler(store, Widget, lambda w, raw: calls.append(w), gone=lambda r: gone.append(r))
    assert rec.reconcile(Request("ns", "x")) == Result() and gone == [Request("ns", "x")] and not calls
    quiet = ObjectReconciler(store, Widget, lambda w, raw: calls.append(w))
    assert quiet.reconcile(Request("ns", "x")) == Result() and not calls


def test_unparseable_objects_are_logged_and_skipped_and_unselected_ones_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Store()
    store.add(widget("bad", "not a number"))
    store.add(widget("theirs", 1, team="other"))
    invalid: list[tuple[str, ValidationError]] = []
    calls: list[str] = []
    rec = ObjectReconciler(
        store,
        Widget,
        lambda w, raw: calls.append(w.metadata.name),
        selects=lambda raw: raw["metadata"]["labels"].get("team") != "other",
        on_invalid=lambda raw, exc: invalid.append((raw["metadata"]["name"], exc)),
    )
    with caplog.at_level(logging.WARNING):
        assert rec.reconcile(Request("ns", "bad")) == Result()  # no requeue: only a change can help
    assert "Widget ns/bad does not parse" in caplog.text
    assert [name for name, _ in invalid] == ["bad"]
    assert rec.reconcile(Request("ns", "theirs")) == Result() and not calls


def test_errors_of_the_typed_function_propagate_for_the_rate_limited_requeue() -> None:
    store = Store()
    store.add(widget("a"))

    def boom(w: Widget, raw: dict) -> None:
        raise RuntimeError("API down")

    with pytest.raises(RuntimeError):
        ObjectReconciler(store, Widget, boom).reconcile(Request("ns", "a"))
