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


# --- the data-source settings (issue 11, item 2): flags, validated at start, reaching both judges ---


def test_the_data_source_settings_default_to_the_built_in_rules() -> None:
    from controller.api.datasources import DEFAULT_MOUNT_POLICY

    args = main.parse_args([])
    assert main.mount_policy(args) == DEFAULT_MOUNT_POLICY
    assert args.allowed_csi_drivers == ("file.csi.azure.com", "blob.csi.azure.com")
    assert args.node_path_prefix == "/var/lib/kaito-py/"
    custom = main.mount_policy(main.parse_args(["--allowed-csi-drivers", " blob.csi.azure.com,, ",
                                                "--node-path-prefix", "/data/kaito"]))
    assert custom.csi_drivers == ("blob.csi.azure.com",) and custom.node_path_prefix == "/data/kaito/"
    assert main.mount_policy(main.parse_args(["--allowed-csi-drivers", ""])).csi_drivers == ()


@pytest.mark.parametrize(("flag", "value", "says"), [
    ("--node-path-prefix", "/", "must be an absolute directory below /"),
    ("--node-path-prefix", "var/lib/kaito", "must be an absolute directory"),
    ("--node-path-prefix", "/var/lib/../../etc", "without '..'"),
    ("--node-path-prefix", "/var//lib/kaito", "is not normalised: write /var/lib/kaito/"),
    ("--allowed-csi-drivers", "file.csi.azure.com,Secrets Store", "'Secrets Store' is not a CSI driver name"),
    ("--allowed-csi-drivers", "x" * 64, "is not a CSI driver name"),
])
def test_a_bad_setting_stops_the_controller_at_start_with_a_clear_error(
        flag: str, value: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main.parse_args([flag, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: " in err and says in err, err


def test_the_settings_reach_the_webhook_and_the_reconcilers_validator(monkeypatch: pytest.MonkeyPatch
                                                                     ) -> None:
    """The webhook answers by the flags, not the constants; and so does the reconciler (for objects
    stored while no webhook ran)."""
    import json
    import ssl
    import urllib.request

    from controller.api.workspace import Workspace

    monkeypatch.setattr(main, "apply_validating_webhook_configuration", lambda _c, _cfg: None)

    class _Client:
        api_client = None

    flags = ["--allowed-csi-drivers", "disk.csi.example.com", "--node-path-prefix", "/data/kaito/"]
    args = main.parse_args(["--webhook-port", "0", *flags])
    ws = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "w", "namespace": "n"},
          "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {"a": "b"}}},
          "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}, "adapters": [
              {"source": {"name": "a", "volumeSource": {"csi": {"driver": "file.csi.azure.com"}}}},
              {"source": {"name": "b", "volumeSource": {"csi": {"driver": "disk.csi.example.com"}}}},
              {"source": {"name": "c", "path": "/var/lib/kaito-py/adapters/c"}},
              {"source": {"name": "d", "path": "/data/kaito/adapters/d"}}]}}
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "1", "kind": {"group": "kaito.sh", "version": "v1beta1", "kind": "Workspace"},
        "operation": "CREATE", "namespace": "n", "name": "w", "object": ws}}
    server = main.start_webhook(args, _Client())  # type: ignore[arg-type]
    try:
        ctx = ssl.create_default_context(cadata=server.ca_bundle.decode())
        req = urllib.request.Request(server.url, data=json.dumps(review).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            message = json.loads(resp.read())["response"]["status"]["message"]
    finally:
        server.stop()
    for judged in (message, main.workspace_validator(args)(Workspace.from_k8s(ws))):
        csi = "adapters[0].source.volumeSource: CSI driver 'file.csi.azure.com' is not allowed: use one of "
        assert csi + "disk.csi.example.com" in judged, judged
        assert "adapters[2].source.path: '/var/lib/kaito-py/adapters/c' is not under /data/kaito/" in judged
        assert "adapters[1]" not in judged and "adapters[3]" not in judged, judged
