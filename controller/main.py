"""``kaito-controller``: the operator process.

One Manager (shared informers, leader election on a Lease in ``--namespace``, /healthz, /readyz
and /metrics) runs the Workspace controller. When ``--webhook-port`` is given, the validating
admission webhook is served from the same process over HTTPS and registered with the API server
(``ValidatingWebhookConfiguration``), which is what a local run needs. In a cluster the chart
registers it and mounts one serving cert into every replica (``--webhook-cert-dir``): the process
then serves that cert, reloads it when it rotates and patches only the caBundle.

``--node-api`` picks the node objects the Workspace controller creates: Karpenter v1 NodeClaims,
the seed's Machines, or (``auto``, the default) whichever CRD the API server serves, NodeClaims
first (``controller.api.nodeapi``; the provisioner resolves the same flag the same way).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from controller.api import datasources, nodeapi
from controller.api.validation import reconcile_problem
from controller.api.workspace import Workspace
from controller.runtime import Client, Manager, RestClient
from controller.webhook import (
    WebhookServer,
    apply_validating_webhook_configuration,
    render_validating_webhook_configuration,
)
from controller.webhook.certwatch import CertDir, CertWatcher
from controller.webhook.config import CONFIGURATION_NAME, WEBHOOK_CONFIGS, patch_ca_bundle
from controller.workspace import byo
from controller.workspace.probe import URL_SOURCES
from controller.workspace.reconciler import DEFAULT_SERVE_IMAGE, Options
from controller.workspace.setup import setup_workspace_controller

log = logging.getLogger("kaito-controller")

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="kaito-controller", description=__doc__.splitlines()[0])
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"),
                   help="kubeconfig path (default: $KUBECONFIG, ~/.kube/config, then in-cluster)")
    p.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "kaito-system"),
                   help="namespace of the leader-election Lease (and the webhook's Service in a cluster)")
    p.add_argument("--leader-elect", action="store_true", help="hold a Lease so only one replica reconciles")
    p.add_argument("--metrics-port", type=int, default=8080, help="/metrics port (0 = any free port)")
    p.add_argument("--health-port", type=int, default=8081, help="/healthz and /readyz port (0 = any)")
    p.add_argument("--webhook-port", type=int, default=None,
                   help="serve the validating admission webhook over HTTPS on this port and register it")
    p.add_argument("--webhook-host", default="127.0.0.1",
                   help="address the API server uses to reach the webhook (local runs)")
    p.add_argument("--webhook-service", default=None,
                   help="in a cluster: register the webhook through this Service in --namespace")
    p.add_argument("--webhook-cert-dir", type=Path, default=None,
                   help="serve the cert in this directory (tls.crt, tls.key, ca.crt: the chart's Secret), "
                        "reload it when it changes and patch only the caBundle of --webhook-configuration; "
                        "without it a self-signed cert is made and the configuration is registered")
    p.add_argument("--webhook-configuration", default=CONFIGURATION_NAME,
                   help="name of the ValidatingWebhookConfiguration whose caBundle --webhook-cert-dir keeps")
    p.add_argument("--bind-host", default="0.0.0.0", help="address the probe/metrics servers listen on")
    p.add_argument("--workers", type=int, default=2, help="concurrent reconciles")
    p.add_argument("--node-api", choices=nodeapi.CHOICES, default="auto",
                   help="create NodeClaims (karpenter.sh/v1) or Machines (v1alpha5); auto: the served one")
    p.add_argument("--node-provisioner", choices=byo.NODE_PROVISIONERS, default=byo.PROVISION,
                   help="gpu-provisioner: Machines/NodeClaims for what resource.preferredNodes do not "
                        "cover; byo: provision nothing, wait for existing nodes matching the labelSelector")
    p.add_argument("--serve-image", default=os.environ.get("KAITO_SERVE_IMAGE", DEFAULT_SERVE_IMAGE),
                   help="image of the Ray head/worker pods (contains the rayserve package)")
    p.add_argument("--tuning-image", default=os.environ.get("KAITO_TUNING_IMAGE", DEFAULT_SERVE_IMAGE),
                   help="image of tuning Jobs")
    p.add_argument("--ray-token-auth", action=argparse.BooleanOptionalAction, default=True,
                   help="Ray's token authentication on each workspace's Ray cluster (KubeRay >= 1.6 "
                        "makes and injects the token); off only where KubeRay is older, whose CRD "
                        "drops authOptions")
    p.add_argument("--serve-haproxy", action=argparse.BooleanOptionalAction, default=False,
                   help="Serve's HAProxy ingress in each workspace's Ray cluster instead of its Python "
                        "proxy: ~1.2-1.3x the tokens/s on small CPU-bound replicas (docs/bench/serve.md), "
                        "but a client that gives up on a non-streamed request no longer stops its "
                        "generation")
    p.add_argument("--first-request-url", choices=URL_SOURCES, default="service",
                   help="where the timeline's one-token first request goes: the workspace's Service, "
                   "the address the local KubeRay stand-in publishes (rayservice-status), or off")
    p.add_argument("--allow-load-balancer", action="store_true",
                   help="let kaito.sh/enablelb make a workspace's Service a LoadBalancer (default: never; "
                        "a Workspace author alone must not publish a model)")
    p.add_argument("--load-balancer-source-ranges", default="",
                   help="comma-separated CIDRs a LoadBalancer admits when the workspace names none "
                        "(kaito.sh/loadbalancer-source-ranges)")
    p.add_argument("--orphan-grace-seconds", type=float, default=300.0,
                   help="delete a NodeClaim/Machine whose Workspace is gone (its finalizer never ran) "
                        "once it is this old, after an authoritative read")
    p.add_argument("--orphan-interval-seconds", type=float, default=60.0,
                   help="how often to look for such orphans (0: never)")
    p.add_argument("--network-policy", action=argparse.BooleanOptionalAction, default=True,
                   help="a NetworkPolicy per inference workspace admitting clients to the serve port only")
    p.add_argument("--machine-relaunch-limit", type=int, default=3,
                   help="re-create a Machine that went away before it was Ready (its Node never "
                        "registered) at most this many times in a row, then stop and say why")
    p.add_argument("--machine-relaunch-backoff-seconds", type=float, default=60.0,
                   help="wait before the first such re-creation; doubles each time, up to 15 minutes")
    p.add_argument("--hf-endpoint", default=os.environ.get("HF_ENDPOINT") or None,
                   help="the Hugging Face hub (or mirror) uncatalogued model ids are read from; also "
                        "the serve pods' HF_ENDPOINT (default: $HF_ENDPOINT, else huggingface.co)")
    p.add_argument("--hf-timeout-seconds", type=float, default=10.0,
                   help="timeout of each request to the hub while resolving a model id")
    p.add_argument("--allowed-csi-drivers", type=_flag(datasources.csi_driver_list),
                   default=",".join(datasources.ALLOWED_CSI_DRIVERS),
                   help="comma-separated CSI drivers a Workspace's volumeSource may name (\"\": none)")
    p.add_argument("--node-path-prefix", type=_flag(datasources.node_path_prefix),
                   default=datasources.NODE_PATH_PREFIX,
                   help="the node directory under which an adapter's or tuning job's path must lie")
    p.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    return p.parse_args(argv)


T = TypeVar("T")


def _flag(parse: Callable[[str], T]) -> Callable[[str], T]:
    """A parser's ValueError as argparse's error: the process exits at start with the message."""
    @functools.wraps(parse)
    def checked(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return checked


def workspace_validator(args: argparse.Namespace) -> Callable[[Workspace], str | None]:
    """The reconciler's rules: the webhook's, under the same settings."""
    return functools.partial(reconcile_problem, mounts=mount_policy(args))


def mount_policy(args: argparse.Namespace) -> datasources.MountPolicy:
    """What the webhook and the reconciler allow a Workspace to mount (the flags, parsed)."""
    return datasources.MountPolicy(csi_drivers=args.allowed_csi_drivers,
                                   node_path_prefix=args.node_path_prefix)


class MountedWebhook:
    """The webhook served from a shared, mounted cert (the chart's mode).

    Every replica serves the same cert, so the one caBundle trusts them all; the configuration
    itself belongs to the installer and is never created, replaced or deleted here, only its
    caBundle is patched (at start and after each rotation) in case a cert-manager rotation ran
    ahead of its cainjector.
    """

    def __init__(self, args: argparse.Namespace, client: Client) -> None:
        self.certs = CertDir(args.webhook_cert_dir)
        self.certs.check()
        host = "0.0.0.0" if args.webhook_service else args.webhook_host
        self.client = client
        self.configuration = args.webhook_configuration
        self.server = WebhookServer(host=host, port=args.webhook_port, cert_file=self.certs.cert_file,
                                    key_file=self.certs.key_file, ca_bundle=self.certs.ca_bundle(),
                                    mounts=mount_policy(args))
        self.watcher = CertWatcher(self.certs, self._rotated)

    def start(self) -> MountedWebhook:
        self.server.start()
        self._patch_ca_bundle()
        self.watcher.start()
        log.info("admission webhook serving %s from %s", self.server.url, self.certs.path)
        return self

    def _rotated(self) -> None:
        self.server.reload_certs(self.certs.ca_bundle())
        self._patch_ca_bundle()

    def _patch_ca_bundle(self) -> None:
        try:
            if patch_ca_bundle(self.client, self.server.ca_bundle, self.configuration):
                log.info("caBundle of %s set from %s", self.configuration, self.certs.ca_file)
        except Exception as exc:  # the installer may create the configuration after us; serving
            # must not wait on it, and the next rotation (or restart) patches again
            log.warning("could not patch the caBundle of %s: %s", self.configuration, exc)

    def stop(self) -> None:
        self.watcher.stop()
        self.server.stop()


def start_webhook(args: argparse.Namespace, client: RestClient) -> WebhookServer:
    """Serve the admission webhook over HTTPS (a fresh self-signed cert) and register it.

    Local runs (no ``--webhook-service``): listen on ``--webhook-host`` and register the URL
    ``https://<webhook-host>:<port>/validate``. In a cluster (``--webhook-service kaito-webhook``):
    listen on all interfaces with a cert for the Service's DNS names and register the Service.
    Either way the configuration is replaced with the new CA bundle, so a restart heals it.
    """
    if args.webhook_service:
        svc, ns = args.webhook_service, args.namespace
        dns = [svc, f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local"]
        server = WebhookServer(host="0.0.0.0", port=args.webhook_port, hosts=dns,
                               mounts=mount_policy(args)).start()
        config = render_validating_webhook_configuration(server.ca_bundle, service_name=svc,
                                                         service_namespace=ns)
        where = f"Service {ns}/{svc}"
    else:
        server = WebhookServer(host=args.webhook_host, port=args.webhook_port,
                               mounts=mount_policy(args)).start()
        config = render_validating_webhook_configuration(server.ca_bundle, url=server.url)
        where = server.url
    apply_validating_webhook_configuration(client.api_client, config)
    log.info("admission webhook registered at %s", where)
    return server


def stop_webhook(server: WebhookServer, client: Client) -> None:
    """Stop serving and unregister, if the configuration still points at us.

    A registration left behind with failurePolicy Fail would make the API server refuse every
    Workspace create/update after a local run ends. Another replica that re-registered its own
    URL is left alone.
    """
    server.stop()
    try:
        current = client.get(WEBHOOK_CONFIGS, CONFIGURATION_NAME)
        urls = {(w.get("clientConfig") or {}).get("url") for w in current.get("webhooks") or []}
        if urls == {server.url}:
            client.delete(WEBHOOK_CONFIGS, CONFIGURATION_NAME)
    except Exception as exc:  # best effort on the way out (the API server may be gone): never
        # turn a clean shutdown into a failure exit
        log.warning("could not unregister the admission webhook: %s", exc)


def build_manager(args: argparse.Namespace, client: Client) -> Manager:
    mgr = Manager(
        client,
        name="kaito-controller",
        namespace=args.namespace,
        leader_election=args.leader_elect,
        health_port=args.health_port,
        metrics_port=args.metrics_port,
        bind_host=args.bind_host,
    )
    # with bring-your-own nodes only, no node-object CRD need be installed
    api = nodeapi.MACHINE_API if args.node_provisioner == byo.BYO else nodeapi.resolve(client, args.node_api)
    log.info("node objects: %s", api.kind)
    setup_workspace_controller(
        mgr, workers=args.workers,
        options=Options(
            serve_image=args.serve_image, tuning_image=args.tuning_image,
            ray_token_auth=args.ray_token_auth, serve_haproxy=args.serve_haproxy,
            first_request_url=args.first_request_url,
            allow_load_balancer=args.allow_load_balancer, node_provisioner=args.node_provisioner,
            load_balancer_source_ranges=tuple(
                r.strip() for r in args.load_balancer_source_ranges.split(",") if r.strip()),
            orphan_grace_seconds=args.orphan_grace_seconds,
            orphan_interval_seconds=args.orphan_interval_seconds,
            relaunch_limit=args.machine_relaunch_limit,
            relaunch_backoff_seconds=args.machine_relaunch_backoff_seconds,
            hf_endpoint=args.hf_endpoint, hf_timeout_seconds=args.hf_timeout_seconds,
        ),
        node_api=api,
        network_policies=args.network_policy,
        # the webhook's rules, so an object stored while no webhook ran is judged the same way
        validator=workspace_validator(args),
    )
    return mgr


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    client = RestClient.from_kubeconfig(args.kubeconfig)
    mounted: MountedWebhook | None = None
    webhook: WebhookServer | None = None
    if args.webhook_port is not None and args.webhook_cert_dir is not None:
        mounted = MountedWebhook(args, client).start()
    elif args.webhook_port is not None:
        webhook = start_webhook(args, client)
    mgr = build_manager(args, client)
    log.info("starting: metrics :%s, health :%s, leader election %s",
             args.metrics_port, args.health_port, "on" if args.leader_elect else "off")
    try:
        return mgr.run_forever()
    finally:
        if mounted is not None:
            mounted.stop()  # the configuration is the installer's: left as it is
        elif webhook is not None and not args.webhook_service:
            stop_webhook(webhook, client)
        elif webhook is not None:
            webhook.stop()  # other replicas keep serving behind the Service
        client.close()


if __name__ == "__main__":
    sys.exit(main())
