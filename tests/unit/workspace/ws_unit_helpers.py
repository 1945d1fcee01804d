"""Builders of Workspace objects for the workspace controller's unit tests."""

from __future__ import annotations

from typing import Any

from controller.api.workspace import Workspace


def workspace(
    name: str = "phi",
    namespace: str = "team-a",
    *,
    preset: str = "phi-3-mini-4k-instruct",
    instance_type: str = "Standard_NC6s_v3",
    tuning: dict | None = None,
    adapters: list[dict] | None = None,
    match_labels: dict | None = None,
    **extra: Any,
) -> Workspace:
    obj: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": "uid-1234",
            "generation": 1,
            "resourceVersion": "7",
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "resource": {
            "instanceType": instance_type,
            "labelSelector": {"matchLabels": match_labels or {"apps": "phi-3"}},
        },
    }
    if tuning is not None:
        obj["tuning"] = tuning
    else:
        inference: dict[str, Any] = {"preset": {"name": preset}}
        if adapters:
            inference["adapters"] = adapters
        obj["inference"] = inference
    obj.update(extra)
    return Workspace.model_validate(obj)
