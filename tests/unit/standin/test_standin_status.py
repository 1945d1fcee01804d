"""Where a RayService answers on the stand-in, read off the status in KubeRay's own fields."""

from __future__ import annotations

from hack.kuberay_standin.controller import serve_endpoint


def _rs(status: dict) -> dict:
    return {"metadata": {"name": "phi", "namespace": "team"}, "status": status}


def _cluster(port: str) -> dict:
    return {"rayClusterStatus": {"head": {"serviceIP": "127.0.0.1"}, "endpoints": {"serve": port}}}


def test_the_active_cluster_wins_then_the_pending_one():
    both = _rs({"activeServiceStatus": _cluster("8000"), "pendingServiceStatus": _cluster("9000")})
    assert serve_endpoint(both) == "http://127.0.0.1:8000/team/phi"
    assert serve_endpoint(_rs({"pendingServiceStatus": _cluster("9000")})) == "http://127.0.0.1:9000/team/phi"


def test_no_address_until_the_status_has_one():
    assert serve_endpoint(_rs({})) is None
    # what real KubeRay writes for a cluster whose head is not up yet
    assert serve_endpoint(_rs({"activeServiceStatus": {"rayClusterStatus": {"head": {}}}})) is None
