"""Where a sharded replica's stage actors run, read from Ray's state API (the dashboard's
``/api/v0``): shared by the tests that check stages sit on distinct Ray nodes."""

from __future__ import annotations

import httpx

from rayserve.pipeline import StageWorker

STAGE_CLASS = StageWorker.__name__


def stage_placement(dashboard_url: str, headers: dict[str, str]) -> dict[str, dict[str, str]]:
    """ALIVE stage actors -> the labels of the Ray node each runs on. ``headers``: Ray's token
    auth (the stand-in runs with it, as KubeRay v1.6 sets it up)."""
    query = {"params": {"limit": 1000, "detail": "true"}, "timeout": 30, "headers": headers}

    def rows(kind: str) -> list[dict]:
        resp = httpx.get(f"{dashboard_url}/api/v0/{kind}", **query)
        resp.raise_for_status()
        return resp.json()["data"]["result"]["result"]

    node_labels = {n["node_id"]: n.get("labels") or {} for n in rows("nodes")}
    return {
        a["actor_id"]: node_labels.get(a["node_id"], {})
        for a in rows("actors")
        if a.get("class_name") == STAGE_CLASS and a.get("state") == "ALIVE"
    }
