"""Ray's token auth on the stand-in's real Ray, as KubeRay v1.6 sets it up for ``authOptions``.

The head runs with ``RAY_AUTH_MODE=token`` although this test process runs with
``RAY_AUTH_MODE=disabled`` (the stand-in's Ray gets its own environment). What is checked is
Ray's own refusal: the dashboard's REST API and the GCS's gRPC without the token, and that the
token KubeRay's Secret holds (here the stand-in's) is the one that opens them, while Serve's HTTP
proxy (the workspace's serve port) is not behind Ray's auth.
"""

from __future__ import annotations

import base64

import grpc
import httpx
import pytest
from standin_helpers import echo_serve_config, http_get_json, rayservice, serve_apps, wait_ready

from controller.api.kinds import RAYSERVICES
from controller.runtime.kinds import SECRETS
from controller.workspace import ray_auth
from hack.kuberay_standin.controller import serve_endpoint
from hack.kuberay_standin.workerpods import cluster_name

pytestmark = pytest.mark.integration

APPS = "/api/serve/applications/"


def _gcs_nodes(address: str, token: str | None) -> grpc.StatusCode:
    """The GCS's answer to a NodeInfo call, with or without the token (as Ray's clients send it)."""
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetAllNodeInfo(gcs_service_pb2.GetAllNodeInfoRequest(), metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_a_rayservice_asking_for_token_auth_gets_kuberays_secret_and_an_authenticated_ray(
    standin, rs_client, rs_namespace
) -> None:
    head = standin.head
    obj = rayservice("authed", rs_namespace, echo_serve_config("behind ray auth"))
    obj["spec"]["rayClusterConfig"].update(ray_auth.cluster_fields(token_auth=True))
    rs_client.create(RAYSERVICES, obj)
    ready = wait_ready(rs_client, rs_namespace, "authed")

    # the Secret where KubeRay keeps it: named after the cluster, key auth_token, the head's token
    secret = rs_client.get(SECRETS, ray_auth.token_secret_name(cluster_name("authed")), rs_namespace)
    token = base64.b64decode(secret["data"][ray_auth.TOKEN_SECRET_KEY]).decode()
    assert token == head.auth_token and len(base64.b64decode(token)) == 32  # KubeRay's 32 random bytes
    assert secret["metadata"]["labels"] == {"ray.io/cluster": cluster_name("authed")}
    assert [o["uid"] for o in secret["metadata"]["ownerReferences"]] == [ready["metadata"]["uid"]]

    # the dashboard: 401 without a token, 403 with a wrong one, 200 with the Secret's (both headers)
    url = head.dashboard_url + APPS
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 403
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 200
    # x-ray-authorization, as KubeRay's dashboard client sends it
    assert f"{rs_namespace}.authed.echo" in serve_apps(head.dashboard_url, head.auth_headers)
    # the job API (which runs any code it is sent) is behind the same check
    job = httpx.post(head.dashboard_url + "/api/jobs/", json={"entrypoint": "id"}, timeout=10)
    assert job.status_code == 401
    # the probes' health paths stay open (KubeRay's readiness probe carries no token)
    assert httpx.get(head.dashboard_url + "/api/gcs_healthz", timeout=10).status_code == 200

    # the GCS: UNAUTHENTICATED without the token, answered with it
    assert _gcs_nodes(head.gcs_address, None) == grpc.StatusCode.UNAUTHENTICATED
    assert _gcs_nodes(head.gcs_address, "nope") == grpc.StatusCode.UNAUTHENTICATED
    assert _gcs_nodes(head.gcs_address, token) == grpc.StatusCode.OK

    # Serve's HTTP proxy is not behind Ray's auth: the app answers with no token at all
    status, body = http_get_json(serve_endpoint(ready))
    assert (status, body["message"]) == (200, "behind ray auth")


def test_a_rayservice_without_auth_options_gets_no_secret(standin, rs_client, rs_namespace) -> None:
    rs_client.create(RAYSERVICES, rayservice("plain", rs_namespace, echo_serve_config("plain")))
    wait_ready(rs_client, rs_namespace, "plain")
    assert not [s for s in rs_client.list(SECRETS, rs_namespace)[0]
                if s["metadata"].get("labels", {}).get("ray.io/cluster")]
