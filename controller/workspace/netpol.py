"""The NetworkPolicy of a workspace's Ray pods: clients reach the serve port, nothing else.

Why: the Ray head listens on GCS (6379), the dashboard and its job API (8265, which runs any code
it is handed) and metrics (8080), and every raylet on ports of its own. Ray's token auth
(``ray_auth.py``, through KubeRay v1.6) guards the dashboard, GCS and raylets, but not metrics, and
is off where the operator runs with ``--no-ray-token-auth``; this policy is the second wall. In a
cluster whose network plugin enforces NetworkPolicies, it admits to the workspace's pods:

- the workspace's own Ray pods, on every port (workers join the head's GCS, objects move between
  raylets);
- anyone, on the serve port only (what the workspace's Service forwards to; the API key guards it);
- the KubeRay operator (pods labelled ``app.kubernetes.io/name: kuberay-operator``, its chart's
  label, in any namespace), on the dashboard port only: it PUTs the serve config there.

NetworkPolicies add up, so a cluster admin who scrapes Ray's metrics admits Prometheus with one of
their own. Pure: the reconciler creates it beside the Service, owned by the Workspace.
"""

from __future__ import annotations

from controller.api.workspace import Workspace
from controller.workspace import names

DASHBOARD_PORT = 8265
KUBERAY_OPERATOR = {"app.kubernetes.io/name": "kuberay-operator"}


def network_policy_name(workspace: str) -> str:
    return names.service_name(workspace)


def build_network_policy(ws: Workspace, pods: dict[str, str]) -> dict:
    """The policy for the pods ``pods`` selects (the workspace's Ray pods)."""
    def tcp(port: int) -> list[dict]:
        return [{"protocol": "TCP", "port": port}]

    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": network_policy_name(ws.name),
            "namespace": ws.namespace,
            "labels": dict(pods),
            "ownerReferences": [ws.owner_reference().to_k8s()],
        },
        "spec": {
            "podSelector": {"matchLabels": dict(pods)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": dict(pods)}}]},
                {"ports": tcp(names.SERVE_PORT)},
                {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": dict(KUBERAY_OPERATOR)}}],
                 "ports": tcp(DASHBOARD_PORT)},
            ],
        },
    }
