"""kaito-provisioner's flags and wiring (nothing is started, no API server is contacted)."""

from __future__ import annotations

import argparse

import kubernetes
import pytest

from controller.runtime import Client, RestClient
from controller.runtime.kinds import NODES
from provisioner.cloud.azure import LABEL_AGENTPOOL, AzureCloud
from provisioner.cloud.fake import FakeCloud
from provisioner.main import Config, build, duration, label_selector, parse_args


def test_flags_become_config() -> None:
    _, cfg = parse_args(
        [
            "--cloud", "fake",
            "--no-leader-elect",
            "--registration-ttl", "20m",
            "--fake-delay", "3s",
            "--fake-fail", "quota:Standard_NC6s_v3",
            "--fake-fail", "capacity",
            "--machine-selector", "kaito.sh/workspace=phi,team=ml",
            "--metrics-port", "0",
        ]
    )  # fmt: skip
    assert cfg.leader_election is False
    assert cfg.options.registration_ttl == 1200
    assert cfg.fake_delay == 3
    assert cfg.fake_failures == ["quota:Standard_NC6s_v3", "capacity"]
    assert cfg.options.machine_selector == {"kaito.sh/workspace": "phi", "team": "ml"}
    assert cfg.metrics_port == 0
    default_ttl = parse_args(["--cloud", "azure"])[1].options.registration_ttl
    assert default_ttl == 900, "Karpenter's 15 min by default"


def test_the_cloud_has_no_default(capsys: pytest.CaptureFixture[str]) -> None:
    """A silent --cloud fake would fabricate GPU Nodes in a real cluster: the flag is required."""
    with pytest.raises(SystemExit) as info:
        parse_args([])
    assert info.value.code == 2 and "--cloud" in capsys.readouterr().err
    with pytest.raises(TypeError):
        Config()  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("1h30m", 5400), ("0.5", 0.5)]
)
def test_duration(text: str, seconds: float) -> None:
    assert duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "m", "ten", "5d"])
def test_bad_duration(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        duration(bad)


def test_bad_selector() -> None:
    assert label_selector("") == {}
    with pytest.raises(argparse.ArgumentTypeError):
        label_selector("no-equals")


def _offline_client() -> Client:
    return RestClient(kubernetes.client.ApiClient(kubernetes.client.Configuration()))


def test_build_fake_applies_injected_failures() -> None:
    cfg = Config(
        cloud="fake", leader_election=False, health_port=None, metrics_port=None,
        fake_failures=["sku:Standard_NC6s_v3"], node_api="machine",
    )
    prov = build(_offline_client(), cfg)
    assert isinstance(prov.provider, FakeCloud)
    assert prov.provider._injected_failure("Standard_NC6s_v3") is not None
    assert prov.provider._injected_failure("Standard_NC24ads_A100_v4") is None


def test_build_azure_learns_provider_ids_from_agentpool_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_CLIENT_ID", "")  # DefaultAzureCredential is built, never asked for a token
    cfg = Config(
        cloud="azure",
        leader_election=False,
        health_port=None,
        metrics_port=None,
        subscription_id="sub",
        resource_group="rg",
        cluster_name="aks",
        node_api="machine",
    )
    prov = build(_offline_client(), cfg)
    assert isinstance(prov.provider, AzureCloud)
    nodes = prov.manager.informer(NODES).store
    pid = "azure:///subscriptions/sub/resourceGroups/mc_rg/.../aks-ws1-12345678-vmss/virtualMachines/0"
    nodes.add(
        {"metadata": {"name": "aks-ws1-0", "labels": {LABEL_AGENTPOOL: "ws1"}}, "spec": {"providerID": pid}}
    )
    assert prov.provider._node_lookup("ws1") == pid
    assert prov.provider._node_lookup("ws2") is None


def test_azure_needs_its_coordinates() -> None:
    with pytest.raises(SystemExit, match="--subscription-id"):
        build(
            _offline_client(),
            Config(cloud="azure", leader_election=False, health_port=None, metrics_port=None,
                   node_api="machine"),
        )
