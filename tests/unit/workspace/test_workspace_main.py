"""kaito-controller's command line and webhook registration modes (no server needed)."""

from __future__ import annotations

from typing import Any

import pytest

from controller import main


def test_defaults_and_flags() -> None:
    args = main.parse_args(["--leader-elect", "--metrics-port", "0", "--health-port", "0", "--workers", "3"])
    assert args.leader_elect and args.metrics_port == 0 and args.workers == 3
    assert args.webhook_port is None and args.namespace


@pytest.mark.parametrize("service", [None, "kaito-webhook"])
def test_webhook_registration_modes(monkeypatch: pytest.MonkeyPatch, service: str | None) -> None:
    applied: list[dict[str, Any]] = []
    monkeypatch.setattr(main, "apply_validating_webhook_configuration", lambda _c, cfg: applied.append(cfg))

    class _Client:
        api_client = None

    flags = ["--webhook-port", "0", "--namespace", "kaito-system"]
    if service:
        flags += ["--webhook-service", service]
    server = main.start_webhook(main.parse_args(flags), _Client())  # type: ignore[arg-type]
    try:
        [cfg] = applied
        client_config = cfg["webhooks"][0]["clientConfig"]
        assert client_config["caBundle"]
        if service:
            assert client_config["service"] == {
                "name": service,
                "namespace": "kaito-system",
                "path": "/validate",
                "port": 443,
            }
        else:
            assert client_config["url"] == f"https://127.0.0.1:{server.port}/validate"
        assert server.port > 0
    finally:
        server.stop()
