"""``kaito-provisioner``: the gpu-provisioner process (Machine controller + cloud + orphan sweep).

``--node-api`` says which node objects it serves: Karpenter v1 NodeClaims, the seed's Machines, or
(``auto``, the default) NodeClaims where their CRD is served and Machines otherwise
(``controller.api.nodeapi``); the Workspace controller resolves the same flag the same way.

``build()`` assembles everything from a ``Config`` without starting it, so tests and the demo run
the very same wiring in-process (and can stop and rebuild it to simulate a restart); ``main()``
only parses flags, builds and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from dataclasses import dataclass, field

from prometheus_client import REGISTRY

from controller.api import nodeapi
from controller.runtime import Client, Manager, RestClient
from controller.runtime.kinds import NODES
from provisioner.cloud.base import CloudProvider
from provisioner.cloud.catalog import load_instance_types
from provisioner.machine_controller import MachineReconciler, Options
from provisioner.metrics import MachinePhaseCollector
from provisioner.orphans import OrphanSweeper
from provisioner.setup import setup_machine_controller

log = logging.getLogger("kaito-provisioner")

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def label_selector(text: str) -> dict[str, str]:
    """``k=v,k2=v2`` (equality only) as a dict; empty text selects everything."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"not a key=value label selector: {part!r}")
        out[key.strip()] = value.strip()
    return out


def duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``1h30m`` (Go-style durations, as Karpenter's flags)."""
    m = _DURATION.match(text.strip())
    if not text.strip() or not m or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r}")
    h, mins, secs = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mins * 60 + secs


@dataclass
class Config:
    # no default: "fake" fabricates GPU Nodes, which in a real cluster would attract real pods
    cloud: str
    namespace: str = "kaito-system"
    leader_election: bool = True
    health_port: int | None = 8081
    metrics_port: int | None = 8080
    instance_types_file: str | None = None
    node_api: str = "auto"  # nodeapi.CHOICES
    options: Options = field(default_factory=Options)
    orphan_grace: float = 300.0
    orphan_interval: float = 120.0
    # fake cloud
    fake_namespace: str = "kube-system"
    fake_delay: float = 5.0
    fake_ready_delay: float = 1.0
    fake_tick: float = 0.5
    fake_failures: list[str] = field(default_factory=list)  # "quota", "capacity:Standard_NC6s_v3"...
    # azure
    subscription_id: str = ""
    resource_group: str = ""
    cluster_name: str = ""


@dataclass
class Provisioner:
    """The assembled process: start()/stop() it, or run_forever()."""

    manager: Manager
    provider: CloudProvider
    reconciler: MachineReconciler
    sweeper: OrphanSweeper

    def start(self) -> None:
        self.manager.start()

    def stop(self) -> None:
        self.manager.stop()

    def run_forever(self) -> int:
        return self.manager.run_forever()


def build(client: Client, config: Config) -> Provisioner:
    """Wire the manager, provider, Machine controller, orphan sweep (and fake data plane)."""
    mgr = Manager(
        client,
        name="kaito-provisioner",
        namespace=config.namespace,
        leader_election=config.leader_election,
        health_port=config.health_port,
        metrics_port=config.metrics_port,
    )
    types = load_instance_types(config.instance_types_file)
    provider = _provider(mgr, client, config, types)
    api = nodeapi.resolve(client, config.node_api)
    reconciler = setup_machine_controller(mgr, provider, config.options, api=api)
    sweeper = OrphanSweeper(provider, reconciler.machines, config.orphan_grace, config.orphan_interval)
    mgr.add_runnable(sweeper.run, needs_leader=True)
    return Provisioner(mgr, provider, reconciler, sweeper)


def _provider(mgr: Manager, client: Client, config: Config, types: list) -> CloudProvider:
    if config.cloud == "fake":
        from provisioner.cloud.fake import FakeCloud

        fake = FakeCloud(
            client,
            namespace=config.fake_namespace,
            instance_types=types,
            boot_delay=config.fake_delay,
            ready_delay=config.fake_ready_delay,
            tick_interval=config.fake_tick,
        )
        for spec in config.fake_failures:
            kind, _, sku = spec.partition(":")
            fake.fail(kind, sku or None)
        mgr.add_runnable(fake.run, needs_leader=True)  # the fake "kubelets" act only on the leader
        return fake
    if config.cloud == "azure":
        from provisioner.cloud import azure

        missing = [n for n in ("subscription_id", "resource_group", "cluster_name") if not getattr(config, n)]
        if missing:
            raise SystemExit(f"--cloud azure needs {', '.join('--' + n.replace('_', '-') for n in missing)}")
        nodes = mgr.informer(NODES).store
        index = nodes.add_label_index(azure.LABEL_AGENTPOOL)

        def node_lookup(pool: str) -> str | None:
            for node in nodes.by_index(index, pool):
                pid = (node.get("spec") or {}).get("providerID")
                if pid:
                    return str(pid)
            return None

        return azure.from_environment(
            config.subscription_id,
            config.resource_group,
            config.cluster_name,
            node_lookup=node_lookup,
            instance_types=types,
        )
    raise SystemExit(f"unknown --cloud {config.cloud!r} (fake or azure)")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Config]:
    p = argparse.ArgumentParser(prog="kaito-provisioner", description=__doc__.splitlines()[0])
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"), help="default: in-cluster")
    p.add_argument(
        "--cloud",
        choices=("fake", "azure"),
        required=True,
        help="azure: AKS agent pools; fake: kwok-style Node objects for trials (no default: a silent "
        "fake would fabricate GPU nodes in a real cluster)",
    )
    p.add_argument(
        "--namespace", default=os.environ.get("POD_NAMESPACE", "kaito-system"), help="for the lease"
    )
    p.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--health-port", type=int, default=8081, help="/healthz, /readyz; 0 picks a free port")
    p.add_argument("--metrics-port", type=int, default=8080, help="/metrics; 0 picks a free port")
    p.add_argument("--instance-types-file", help="JSON SKU catalogue (default: the one shipped)")
    p.add_argument("--registration-ttl", type=duration, default=15 * 60.0, help="e.g. 15m (default)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--node-api", choices=nodeapi.CHOICES, default="auto",
                   help="NodeClaims (karpenter.sh/v1), Machines (v1alpha5), or auto: whichever CRD is served")
    p.add_argument(
        "--machine-selector",
        type=label_selector,
        default={},
        metavar="K=V[,K=V]",
        help="reconcile only Machines with these labels (default: all)",
    )
    p.add_argument("--orphan-grace", type=duration, default=300.0, help="age before an orphan is deleted")
    p.add_argument("--orphan-interval", type=duration, default=120.0)
    p.add_argument("--fake-delay", type=duration, default=5.0, help="fake cloud: boot time of a node")
    p.add_argument("--fake-ready-delay", type=duration, default=1.0, help="fake cloud: boot to Ready + GPUs")
    p.add_argument("--fake-namespace", default="kube-system", help="fake cloud: where its inventory lives")
    p.add_argument(
        "--fake-fail",
        action="append",
        default=[],
        metavar="KIND[:SKU]",
        help="fake cloud: fail creates with quota|capacity|sku (optionally for one SKU); repeatable",
    )
    p.add_argument("--subscription-id", default=os.environ.get("AZURE_SUBSCRIPTION_ID", ""))
    p.add_argument("--resource-group", default=os.environ.get("AZURE_RESOURCE_GROUP", ""))
    p.add_argument("--cluster-name", default=os.environ.get("AZURE_CLUSTER_NAME", ""))
    p.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    args = p.parse_args(argv)
    config = Config(
        cloud=args.cloud,
        namespace=args.namespace,
        leader_election=args.leader_elect,
        health_port=args.health_port,
        metrics_port=args.metrics_port,
        instance_types_file=args.instance_types_file,
        node_api=args.node_api,
        options=Options(
            registration_ttl=args.registration_ttl,
            workers=args.workers,
            machine_selector=args.machine_selector or None,
        ),
        orphan_grace=args.orphan_grace,
        orphan_interval=args.orphan_interval,
        fake_namespace=args.fake_namespace,
        fake_delay=args.fake_delay,
        fake_ready_delay=args.fake_ready_delay,
        fake_failures=args.fake_fail,
        subscription_id=args.subscription_id,
        resource_group=args.resource_group,
        cluster_name=args.cluster_name,
    )
    return args, config


def main(argv: list[str] | None = None) -> int:
    args, config = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    client = RestClient.from_kubeconfig(args.kubeconfig)
    prov = build(client, config)
    REGISTRY.register(MachinePhaseCollector(prov.reconciler.machines.list, prov.reconciler.api.model))
    log.info(
        "kaito-provisioner: cloud=%s node-api=%s registration-ttl=%ss",
        config.cloud, prov.reconciler.api.name, config.options.registration_ttl,
    )
    return prov.run_forever()


if __name__ == "__main__":
    sys.exit(main())
