"""The webhook served from a mounted cert directory: one cert for every replica, reloaded on rotation.

Real TLS handshakes against the real server: a client that trusts only the new CA must get in after
a rotation, and one that trusts only the old CA must not.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.request
from pathlib import Path

import pytest

from controller.webhook.certs import ServingCerts, generate_serving_certs
from controller.webhook.certwatch import CertDir, CertDirError, CertWatcher
from controller.webhook.config import ca_bundle_patch, render_validating_webhook_configuration
from controller.webhook.server import WebhookServer


def _write(directory: Path, certs: ServingCerts) -> None:
    certs.write(directory)
    (directory / "ca.crt").write_bytes(certs.ca_pem)


def _healthz(server: WebhookServer, ca_pem: bytes) -> str:
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    with urllib.request.urlopen(f"https://127.0.0.1:{server.port}/healthz", context=ctx, timeout=5) as r:
        return r.read().decode()


def test_a_rotated_cert_is_served_without_a_restart(tmp_path: Path) -> None:
    old, new = generate_serving_certs(["127.0.0.1"]), generate_serving_certs(["127.0.0.1"])
    _write(tmp_path, old)
    certs = CertDir(tmp_path)
    server = WebhookServer(port=0, cert_file=certs.cert_file, key_file=certs.key_file,
                           ca_bundle=certs.ca_bundle()).start()
    rotations: list[bytes] = []

    def rotated() -> None:
        server.reload_certs(certs.ca_bundle())
        rotations.append(server.ca_bundle)

    watcher = CertWatcher(certs, rotated)
    try:
        assert _healthz(server, old.ca_pem) == "ok"
        assert watcher.poll() is False  # nothing changed yet
        _write(tmp_path, new)
        assert watcher.poll() is True
        assert rotations == [new.ca_pem]
        assert _healthz(server, new.ca_pem) == "ok"
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            _healthz(server, old.ca_pem)
        assert watcher.poll() is False  # applied once
    finally:
        server.stop()


def test_a_half_written_pair_keeps_the_old_cert_and_is_retried(tmp_path: Path) -> None:
    old, new = generate_serving_certs(["127.0.0.1"]), generate_serving_certs(["127.0.0.1"])
    _write(tmp_path, old)
    certs = CertDir(tmp_path)
    server = WebhookServer(port=0, cert_file=certs.cert_file, key_file=certs.key_file).start()
    watcher = CertWatcher(certs, lambda: server.reload_certs(certs.ca_bundle()))
    try:
        (tmp_path / "tls.crt").write_bytes(new.cert_pem)  # the key does not match yet
        assert watcher.poll() is False
        assert _healthz(server, old.ca_pem) == "ok"
        _write(tmp_path, new)
        assert watcher.poll() is True
        assert _healthz(server, new.ca_pem) == "ok"
    finally:
        server.stop()


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    generate_serving_certs(["127.0.0.1"]).write(tmp_path)  # tls.crt + tls.key, no ca.crt
    with pytest.raises(CertDirError, match=r"lacks ca\.crt"):
        CertDir(tmp_path).check()


def test_only_the_ca_bundle_is_patched_and_only_where_it_differs() -> None:
    current = render_validating_webhook_configuration(b"old-ca", service_name="kaito-webhook")
    ops = ca_bundle_patch(current, b"new-ca")
    assert ops == [
        {"op": "test", "path": "/webhooks/0/name", "value": "validation.workspace.kaito.sh"},
        {"op": "add", "path": "/webhooks/0/clientConfig/caBundle",
         "value": base64.b64encode(b"new-ca").decode()},
    ]
    assert ca_bundle_patch(current, b"old-ca") == []
    # a configuration the chart rendered without any caBundle gets one
    del current["webhooks"][0]["clientConfig"]["caBundle"]
    assert json.dumps(ca_bundle_patch(current, b"x")).count('"add"') == 1
