"""The webhook over real HTTPS on a free port: AdmissionReview in, AdmissionReview out."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request

import pytest

from controller.webhook import WebhookServer, generate_serving_certs, render_validating_webhook_configuration
from controller.webhook.admission import review


def admission_review(obj, operation="CREATE", old=None, kind="Workspace", group="kaito.sh"):
    request = {
        "uid": "8f1c",
        "kind": {"group": group, "version": "v1beta1", "kind": kind},
        "resource": {"group": group, "version": "v1beta1", "resource": "workspaces"},
        "operation": operation,
        "namespace": "default",
        "name": obj.get("metadata", {}).get("name"),
        "object": obj,
    }
    if old is not None:
        request["oldObject"] = old
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


GOOD = {
    "apiVersion": "kaito.sh/v1alpha1",
    "kind": "Workspace",
    "metadata": {"name": "workspace-phi-3"},
    "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {"apps": "phi-3"}}},
    "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
}
BAD = {**GOOD, "inference": {"preset": {"name": "phi-4-mini"}}}


@pytest.fixture(scope="module")
def server():
    with WebhookServer(host="127.0.0.1", port=0) as srv:
        yield srv


def post(srv, body, path="/validate"):
    ctx = ssl.create_default_context(cadata=srv.ca_bundle.decode())  # verifies the cert against our CA
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        f"https://127.0.0.1:{srv.port}{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


def test_allows_a_good_workspace(server):
    status, answer = post(server, admission_review(GOOD))
    assert status == 200
    assert answer == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "8f1c", "allowed": True},
    }


def test_denies_a_bad_workspace_with_the_message(server):
    _, answer = post(server, admission_review(BAD))
    response = answer["response"]
    assert response["uid"] == "8f1c" and response["allowed"] is False
    assert response["status"]["code"] == 403
    assert response["status"]["message"].startswith("inference.preset.name: unknown preset 'phi-4-mini'.")


def test_update_with_immutable_change_is_denied(server):
    new = {**GOOD, "resource": {**GOOD["resource"], "instanceType": "Standard_NC24ads_A100_v4"}}
    _, answer = post(server, admission_review(new, "UPDATE", old=GOOD))
    assert "resource.instanceType: is immutable" in answer["response"]["status"]["message"]


def test_warnings_are_passed_back(server):
    gated = {**GOOD, "inference": {"preset": {"name": "llama-3.1-8b-instruct"}}}
    _, answer = post(server, admission_review(gated))
    assert answer["response"]["allowed"] and "HF_TOKEN" in answer["response"]["warnings"][0]


def test_other_kinds_and_deletes_are_allowed(server):
    assert post(server, admission_review(BAD, operation="DELETE"))[1]["response"]["allowed"]
    assert post(server, admission_review({"metadata": {}}, kind="ConfigMap", group=""))[1]["response"][
        "allowed"
    ]


def test_garbage_is_a_400_and_unknown_paths_404(server):
    with pytest.raises(urllib.error.HTTPError) as err:
        post(server, b"{not json")
    assert err.value.code == 400
    with pytest.raises(urllib.error.HTTPError) as err:
        post(server, {"kind": "Pod"})
    assert err.value.code == 400
    with pytest.raises(urllib.error.HTTPError) as err:
        post(server, admission_review(GOOD), path="/mutate")
    assert err.value.code == 404


def test_healthz(server):
    ctx = ssl.create_default_context(cadata=server.ca_bundle.decode())
    with urllib.request.urlopen(f"https://127.0.0.1:{server.port}/healthz", context=ctx, timeout=10) as resp:
        assert resp.read() == b"ok"


def test_review_rejects_a_body_without_a_request():
    with pytest.raises(ValueError, match="AdmissionReview"):
        review({"kind": "AdmissionReview"})


def test_certs_cover_the_hosts():
    from cryptography import x509

    certs = generate_serving_certs(["127.0.0.1", "kaito-webhook.kaito-system.svc"])
    leaf = x509.load_pem_x509_certificate(certs.cert_pem)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["kaito-webhook.kaito-system.svc"]
    with pytest.raises(ValueError):
        generate_serving_certs([])


def test_rendered_configuration():
    cfg = render_validating_webhook_configuration(b"PEM", url="https://127.0.0.1:9443/validate")
    (hook,) = cfg["webhooks"]
    assert cfg["kind"] == "ValidatingWebhookConfiguration"
    assert hook["clientConfig"] == {
        "caBundle": base64.b64encode(b"PEM").decode(),
        "url": "https://127.0.0.1:9443/validate",
    }
    assert hook["rules"][0]["apiVersions"] == ["v1alpha1", "v1beta1"]
    assert hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    assert hook["sideEffects"] == "None" and hook["admissionReviewVersions"] == ["v1"]
    svc = render_validating_webhook_configuration(b"PEM", service_name="kaito-webhook")
    assert svc["webhooks"][0]["clientConfig"]["service"] == {
        "name": "kaito-webhook",
        "namespace": "kaito-system",
        "path": "/validate",
        "port": 443,
    }
    with pytest.raises(ValueError):
        render_validating_webhook_configuration(b"PEM")
