"""The workspace's NetworkPolicy: clients reach the serve port, the Ray pods each other, KubeRay the
dashboard, and nothing else (issue 11 item 9)."""

from __future__ import annotations

from ws_unit_helpers import workspace

from controller.workspace import names
from controller.workspace.inference import pod_labels
from controller.workspace.netpol import DASHBOARD_PORT, build_network_policy


def test_clients_get_the_serve_port_only() -> None:
    ws = workspace()
    policy = build_network_policy(ws, pod_labels(ws))
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": pod_labels(ws)}
    assert spec["policyTypes"] == ["Ingress"]
    from_anyone = [r for r in spec["ingress"] if "from" not in r]
    assert from_anyone == [{"ports": [{"protocol": "TCP", "port": names.SERVE_PORT}]}]
    peers, kuberay = (r for r in spec["ingress"] if "from" in r)
    assert peers == {"from": [{"podSelector": {"matchLabels": pod_labels(ws)}}]}  # all ports, own pods
    assert kuberay["ports"] == [{"protocol": "TCP", "port": DASHBOARD_PORT}]
    assert kuberay["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "kuberay-operator"}
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "uid-1234"
