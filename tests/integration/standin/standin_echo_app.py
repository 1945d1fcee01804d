"""A trivial Serve application for the KubeRay stand-in's tests (no model, starts in a second).

``import_path: standin_echo_app:build`` with ``args: {message: ...}``; the tests put this directory
on the Ray head's PYTHONPATH. GET answers ``{"message", "path"}``; ``args.fail_health_after_s: N`` makes
the replica fail its health checks N seconds after it started (Serve then reports the app
UNHEALTHY while it replaces the replica).
"""

from __future__ import annotations

import time
from typing import Any

from ray import serve
from starlette.requests import Request


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Echo:
    def __init__(self, message: str, fail_health_after_s: float | None = None) -> None:
        self.message = message
        self.fail_at = None if fail_health_after_s is None else time.monotonic() + fail_health_after_s

    def check_health(self) -> None:
        if self.fail_at is not None and time.monotonic() > self.fail_at:
            raise RuntimeError("echo replica configured to turn unhealthy")

    async def __call__(self, request: Request) -> dict[str, Any]:
        return {"message": self.message, "path": request.url.path}


def build(args: dict[str, Any]) -> serve.Application:
    fail_after = args.get("fail_health_after_s")
    return Echo.bind(str(args.get("message", "hello")), None if fail_after is None else float(fail_after))
