"""The Helm chart against a real kube-apiserver: lint, render, install, upgrade, uninstall, and the
operator run exactly as the chart's Deployments describe it.

One private API server for the module (the chart registers a cluster-wide webhook with
failurePolicy Fail, which must not reach the shared server other tests use). Its static tokens
for the chart's ServiceAccounts are made before it starts, so every process here acts with the
chart's RBAC, not as an admin.
"""

from __future__ import annotations

import base64
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_helpers import wait_for

from controller.api.kinds import MACHINES, WORKSPACES
from controller.runtime import ApiError, RestClient
from controller.runtime.kinds import (
    CLUSTER_ROLES,
    CUSTOM_RESOURCE_DEFINITIONS,
    DEPLOYMENTS,
    NAMESPACES,
    SECRETS,
    VALIDATING_WEBHOOK_CONFIGURATIONS,
)
from controller.webhook.config import render_validating_webhook_configuration
from hack.chart import CHART, Helm, local_values, pod_process, start_pod
from hack.controlplane.local import ControlPlane
from hack.ports import free_port
from hack.procs import ManagedProcess
from hack.service_proxy import ServiceProxy
from hack.upstream_crds import crd_paths as upstream_crd_paths

pytestmark = pytest.mark.integration

NS = "kaito-system"
REPO = Path(__file__).resolve().parents[3]
FAKE = {"provisioner": {"cloud": "fake"}}
AZURE = {"provisioner": {"cloud": "azure", "azure": {
    "subscriptionId": "00000000-0000-0000-0000-000000000000", "resourceGroup": "rg", "clusterName": "aks",
    "workloadIdentity": {"clientId": "11111111-1111-1111-1111-111111111111"}}}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, dict[str, Path]]]:
    cp = ControlPlane(tmp_path_factory.mktemp("chart-cp"))
    ids = {sa: cp.service_account_kubeconfig(NS, sa) for sa in ("kaito-controller", "kaito-provisioner")}
    cp.start()
    try:
        yield cp, ids
    finally:
        cp.stop()


@pytest.fixture(scope="module")
def admin(cluster: tuple[ControlPlane, dict[str, Path]]) -> Iterator[RestClient]:
    client = RestClient.from_kubeconfig(str(cluster[0].kubeconfig))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def helm(cluster: tuple[ControlPlane, dict[str, Path]]) -> Helm:
    return Helm(cluster[0].kubeconfig)


def _kubectl(cp: ControlPlane, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", "--kubeconfig", str(cp.kubeconfig), *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


def _by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


# --- no cluster needed -----------------------------------------------------------------------------
@pytest.mark.parametrize("values", [FAKE, AZURE], ids=["fake", "azure"])
def test_lint_passes(helm: Helm, values: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    out = helm.run("lint", str(CHART), "-f", str(path)).stdout
    assert "0 chart(s) failed" in out


def test_a_missing_or_unknown_cloud_is_refused(helm: Helm) -> None:
    res = helm.run("template", "kaito", str(CHART), check=False)
    assert res.returncode != 0 and "provisioner.cloud is required" in res.stderr
    res = helm.run("template", "kaito", str(CHART), "--set", "provisioner.cloud=gcp", check=False)
    assert res.returncode != 0 and 'must be azure or fake, not "gcp"' in res.stderr
    res = helm.run("template", "kaito", str(CHART), "--set", "provisioner.cloud=azure", check=False)
    assert res.returncode != 0 and "subscriptionId is required" in res.stderr


def test_fake_cloud_rules_only_with_the_fake_cloud(helm: Helm) -> None:
    fake, azure = _by_kind(helm.template(FAKE), "ClusterRole"), _by_kind(helm.template(AZURE), "ClusterRole")
    assert "kaito-provisioner-fake-cloud" in fake and "kaito-provisioner-fake-cloud" not in azure
    for roles in (fake, azure):
        verbs = {v for r in roles["kaito-provisioner"]["rules"] if "nodes" in r["resources"]
                 for v in r["verbs"]}
        assert "create" not in verbs  # only the fake cloud fabricates Node objects
        controller = roles["kaito-controller"]["rules"]
        # one Secret by name (modelAccessSecret, for an uncatalogued model): never listed or watched
        secret_verbs = {v for r in controller if "secrets" in r["resources"] for v in r["verbs"]}
        assert secret_verbs == {"get"}
        (hook,) = [r for r in controller if r["resources"] == ["validatingwebhookconfigurations"]]
        assert hook["resourceNames"] == ["kaito-workspace-validation"]
        assert set(hook["verbs"]) == {"get", "patch"}


def test_workload_identity_and_azure_env(helm: Helm) -> None:
    objs = helm.template(AZURE)
    sa = _by_kind(objs, "ServiceAccount")["kaito-provisioner"]
    assert sa["metadata"]["annotations"]["azure.workload.identity/client-id"].startswith("1111")
    dep = _by_kind(objs, "Deployment")["kaito-provisioner"]
    assert dep["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AZURE_RESOURCE_GROUP"] == "rg" and "--cloud=azure" in dep["spec"]["template"]["spec"][
        "containers"][0]["args"]


def test_the_webhook_matches_what_the_controller_renders(helm: Helm) -> None:
    (vwc,) = _by_kind(helm.template(FAKE), "ValidatingWebhookConfiguration").values()
    expected = render_validating_webhook_configuration(b"", service_name="kaito-webhook",
                                                       service_namespace=NS)
    for hook in (vwc, expected):
        for w in hook["webhooks"]:
            w["clientConfig"].pop("caBundle", None)
    assert vwc["webhooks"] == expected["webhooks"]


def test_pods_run_restricted(helm: Helm) -> None:
    for dep in _by_kind(helm.template(FAKE), "Deployment").values():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
            assert sc["readOnlyRootFilesystem"] is True
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert c["resources"]["requests"]


def _controller_args(helm: Helm, values: dict[str, Any]) -> list[str]:
    dep = _by_kind(helm.template(values), "Deployment")["kaito-controller"]
    return dep["spec"]["template"]["spec"]["containers"][0]["args"]


def test_load_balancers_only_when_the_values_allow_them(helm: Helm) -> None:
    from controller.main import parse_args

    default = parse_args(_controller_args(helm, FAKE))
    assert default.allow_load_balancer is False and default.load_balancer_source_ranges == ""
    allowed = parse_args(_controller_args(helm, {**FAKE, "controller": {"loadBalancer": {
        "allow": True, "sourceRanges": ["10.0.0.0/8", "203.0.113.0/24"]}}}))
    assert allowed.allow_load_balancer is True
    assert allowed.load_balancer_source_ranges == "10.0.0.0/8,203.0.113.0/24"


def test_ray_token_auth_is_on_unless_the_values_turn_it_off(helm: Helm) -> None:
    from controller.main import parse_args

    assert parse_args(_controller_args(helm, FAKE)).ray_token_auth is True
    off = _controller_args(helm, {**FAKE, "controller": {"rayTokenAuth": False}})
    assert "--no-ray-token-auth" in off and parse_args(off).ray_token_auth is False


def test_serve_haproxy_is_off_unless_the_values_turn_it_on(helm: Helm) -> None:
    from controller.main import parse_args

    assert parse_args(_controller_args(helm, FAKE)).serve_haproxy is False
    on = _controller_args(helm, {**FAKE, "controller": {"serveHaproxy": True}})
    assert "--serve-haproxy" in on and parse_args(on).serve_haproxy is True


def test_node_provisioner_and_node_api_values(helm: Helm) -> None:
    """nodeProvisioner and nodeAPI reach the controller's flags; with byo the chart runs no
    provisioner (nothing would serve node objects) and grants it nothing."""
    from controller.main import parse_args

    def rendered(values: dict[str, Any]) -> tuple[Any, dict[str, dict[str, dict[str, Any]]]]:
        objs = helm.template(values)
        kinds = {k: _by_kind(objs, k) for k in ("Deployment", "ServiceAccount", "ClusterRole")}
        args = kinds["Deployment"]["kaito-controller"]["spec"]["template"]["spec"]["containers"][0]["args"]
        return parse_args(args), kinds

    default, objs = rendered(FAKE)
    assert (default.node_provisioner, default.node_api) == ("gpu-provisioner", "auto")
    assert "kaito-provisioner" in objs["Deployment"] and "kaito-provisioner" in objs["ClusterRole"]

    byo, objs = rendered({"nodeProvisioner": "byo", "nodeAPI": "nodeclaim"})  # no provisioner.cloud needed
    assert (byo.node_provisioner, byo.node_api) == ("byo", "nodeclaim")
    for kind in ("Deployment", "ServiceAccount", "ClusterRole"):
        assert not [n for n in objs[kind] if n.startswith("kaito-provisioner")], (kind, list(objs[kind]))
    assert "kaito-controller" in objs["Deployment"] and "kaito-controller" in objs["ClusterRole"]

    res = helm.run("template", "kaito", str(CHART), "--set", "nodeProvisioner=karpenter", check=False)
    assert res.returncode != 0
    assert 'nodeProvisioner must be gpu-provisioner or byo, not "karpenter"' in res.stderr
    res = helm.run("template", "kaito", str(CHART), "--set", "nodeProvisioner=byo", "--set", "nodeAPI=v1",
                   check=False)
    assert res.returncode != 0 and 'nodeAPI must be auto, nodeclaim or machine, not "v1"' in res.stderr


def test_data_source_settings_render_as_the_controllers_flags(helm: Helm) -> None:
    """The chart's dataSources values are the controller's --allowed-csi-drivers and
    --node-path-prefix; the defaults are the built-in rules, and a bad value stops it at start."""
    from controller.api.datasources import DEFAULT_MOUNT_POLICY, MountPolicy
    from controller.main import mount_policy, parse_args

    assert mount_policy(parse_args(_controller_args(helm, FAKE))) == DEFAULT_MOUNT_POLICY
    custom = {**FAKE, "controller": {"dataSources": {"csiDrivers": ["blob.csi.azure.com"],
                                                     "nodePathPrefix": "/data/kaito"}}}
    want = MountPolicy(("blob.csi.azure.com",), "/data/kaito/")
    assert mount_policy(parse_args(_controller_args(helm, custom))) == want
    none = {**FAKE, "controller": {"dataSources": {"csiDrivers": []}}}
    assert mount_policy(parse_args(_controller_args(helm, none))).csi_drivers == ()
    bad = {**FAKE, "controller": {"dataSources": {"nodePathPrefix": "/"}}}
    with pytest.raises(SystemExit):
        parse_args(_controller_args(helm, bad))


# --- against the API server -----------------------------------------------------------------------
def test_every_rendered_object_is_accepted_by_the_api_server(cluster, helm: Helm, admin: RestClient) -> None:
    cp, _ = cluster
    for crd in sorted((CHART / "crds").glob("*.yaml")):
        res = _kubectl(cp, "apply", "--server-side", "-f", str(crd))
        assert res.returncode == 0, res.stderr
    _kubectl(cp, "create", "namespace", NS)
    for values in (FAKE, AZURE):
        docs = helm.template(values, "kaito", NS)
        res = _kubectl(cp, "apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(docs))
        assert res.returncode == 0, res.stderr
        assert res.stdout.count("(server dry run)") == len(docs)


def _installed(admin: RestClient) -> dict[str, list[str]]:
    """Names of what the release owns, by kind (cluster-scoped and in the namespace)."""
    sel = "app.kubernetes.io/instance=kaito"
    kinds = {
        "deployments": DEPLOYMENTS,
        "secrets": SECRETS,
        "clusterroles": CLUSTER_ROLES,
        "validatingwebhookconfigurations": VALIDATING_WEBHOOK_CONFIGURATIONS,
    }
    return {name: sorted(o["metadata"]["name"] for o in admin.list(kind, NS, label_selector=sel)[0])
            for name, kind in kinds.items()}


def test_install_upgrade_uninstall(cluster, helm: Helm, admin: RestClient) -> None:
    helm.upgrade_install({**FAKE, "controller": {"replicas": 2}})
    got = _installed(admin)
    assert got["deployments"] == ["kaito-controller", "kaito-provisioner"]
    assert got["secrets"] == ["kaito-webhook-cert"]
    assert "kaito-provisioner-fake-cloud" in got["clusterroles"]
    assert got["validatingwebhookconfigurations"] == ["kaito-workspace-validation"]
    cert = admin.get(SECRETS, "kaito-webhook-cert", NS)["data"]
    vwc = admin.get(VALIDATING_WEBHOOK_CONFIGURATIONS, "kaito-workspace-validation")
    assert vwc["webhooks"][0]["clientConfig"]["caBundle"] == cert["ca.crt"]

    helm.upgrade_install({**AZURE, "controller": {"replicas": 3}})
    assert admin.get(DEPLOYMENTS, "kaito-controller", NS)["spec"]["replicas"] == 3
    # the upgrade keeps the cert: replicas rolling over must serve what the caBundle trusts
    assert admin.get(SECRETS, "kaito-webhook-cert", NS)["data"] == cert
    assert "kaito-provisioner-fake-cloud" not in _installed(admin)["clusterroles"]

    helm.uninstall()
    assert _installed(admin) == {k: [] for k in got}
    # CRDs stay, as Helm leaves crds/ alone on uninstall
    crd = admin.get(CUSTOM_RESOURCE_DEFINITIONS, "workspaces.kaito.sh")
    assert crd["metadata"]["name"] == "workspaces.kaito.sh"


def _workspace(name: str, namespace: str, **resource: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
        "metadata": {"name": name, "namespace": namespace},
        "resource": {"instanceType": "Standard_Fake_GPU", "labelSelector": {"matchLabels": {"apps": name}},
                     **resource},
        "inference": {"preset": {"name": "tiny-phi-3"}},
    }


def test_two_replicas_from_the_chart_admit_and_the_loop_provisions(cluster, helm: Helm, admin: RestClient,
                                                                   tmp_path: Path) -> None:
    """Both controller replicas serve the chart's one cert behind a Service stand-in; the leader and
    the provisioner, with the chart's args and ServiceAccounts, take a Workspace to ResourceReady."""
    cp, ids = cluster
    (rayservices,) = upstream_crd_paths(["ray.io_rayservices.yaml"])
    res = _kubectl(cp, "apply", "--server-side", "-f", str(rayservices))
    assert res.returncode == 0, res.stderr
    proxy = ServiceProxy().start()
    procs: list[ManagedProcess] = []
    try:
        helm.upgrade_install(local_values(f"https://127.0.0.1:{proxy.port}/validate", controller_replicas=2))
        controller = admin.get(DEPLOYMENTS, "kaito-controller", NS)
        assert pod_process(controller).service_account == "kaito-controller"
        webhook_ports = []
        for i in range(controller["spec"]["replicas"]):
            ports = {p: free_port() for p in ("metrics", "health", "webhook")}
            procs.append(start_pod(admin, controller, f"controller-{i}", tmp_path, ids, {
                "--metrics-port": str(ports["metrics"]), "--health-port": str(ports["health"]),
                "--webhook-port": str(ports["webhook"]), "--webhook-service": None}))
            # the cert dir points at the local copy of the chart's Secret, as a kubelet mounts it
            assert f"--webhook-cert-dir={tmp_path}/controller-{i}/" in " ".join(procs[-1].argv)
            procs[-1].wait_http(f"http://127.0.0.1:{ports['health']}/healthz", timeout=120)
            webhook_ports.append(ports["webhook"])
        proxy.set_backends(webhook_ports)
        prov = admin.get(DEPLOYMENTS, "kaito-provisioner", NS)
        ports = {p: free_port() for p in ("metrics", "health")}
        procs.append(start_pod(admin, prov, "provisioner", tmp_path, ids, {
            "--metrics-port": str(ports["metrics"]), "--health-port": str(ports["health"]),
            "--fake-delay": "0.5s"}))
        procs[-1].wait_http(f"http://127.0.0.1:{ports['health']}/readyz", timeout=120)

        ns = f"t-{uuid.uuid4().hex[:6]}"
        admin.create(NAMESPACES, {"metadata": {"name": ns}})
        for i in range(6):  # every admission call is a new connection: the proxy spreads them
            admin.create(WORKSPACES, _workspace(f"ws-{i}", ns), namespace=ns)
        assert len(proxy.connections) == 2 and min(proxy.connections.values()) >= 1, proxy.connections
        bad = _workspace("bad", ns)
        bad["inference"]["preset"]["name"] = "no-such-model"
        with pytest.raises(ApiError, match=r'webhook "validation\.workspace\.kaito\.sh" denied') as denied:
            admin.create(WORKSPACES, bad, namespace=ns)
        assert denied.value.status == 403 and "unknown preset" in denied.value.message

        def resource_ready() -> bool:
            ws = admin.get(WORKSPACES, "ws-0", ns)
            conds = {c["type"]: c["status"] for c in (ws.get("status") or {}).get("conditions") or []}
            return conds.get("ResourceReady") == "True"

        wait_for(resource_ready, 120, "ws-0 ResourceReady through the chart's identities")
        machines = admin.list(MACHINES, label_selector="kaito.sh/workspace=ws-0")[0]
        assert machines and all((m.get("status") or {}).get("nodeName") for m in machines)
        secret = admin.get(SECRETS, "kaito-webhook-cert", NS)["data"]
        vwc = admin.get(VALIDATING_WEBHOOK_CONFIGURATIONS, "kaito-workspace-validation")
        ca = vwc["webhooks"][0]["clientConfig"]["caBundle"]
        assert base64.b64decode(ca) == base64.b64decode(secret["ca.crt"])
    finally:
        for p in procs:
            p.stop()
        proxy.stop()
        for p in procs:
            if p.proc is not None and p.proc.returncode not in (0, -15):
                print(p.log_tail())
