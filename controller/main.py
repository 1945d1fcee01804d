"""``kaito-controller``: the operator process.

One Manager (shared informers, leader election on a Lease in ``--namespace``, /healthz, /readyz
and /metrics) runs the Workspace controller. When ``--webhook-port`` is given, the validating
admission webhook is served from the same process over HTTPS and registered with the API server
(``ValidatingWebhookConfiguration``), which is what a local run needs; in a cluster the chart
registers it and the flag only picks the port.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from controller.runtime import Client, Manager, RestClient
from controller.runtime.kinds import VALIDATING_WEBHOOK_CONFIGURATIONS
from controller.webhook import (
    WebhookServer,
    apply_validating_webhook_configuration,
    render_validating_webhook_configuration,
)
from controller.webhook.config import CONFIGURATION_NAME
from controller.workspace.reconciler import DEFAULT_SERVE_IMAGE, Options
from controller.workspace.setup import setup_workspace_controller

log = logging.getLogger("kaito-controller")

WEBHOOK_CONFIGS = VALIDATING_WEBHOOK_CONFIGURATIONS


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
    p.add_argument("--bind-host", default="0.0.0.0", help="address the probe/metrics servers listen on")
    p.add_argument("--workers", type=int, default=2, help="concurrent reconciles")
    p.add_argument("--serve-image", default=os.environ.get("KAITO_SERVE_IMAGE", DEFAULT_SERVE_IMAGE),
                   help="image of the Ray head/worker pods (contains the rayserve package)")
    p.add_argument("--tuning-image", default=os.environ.get("KAITO_TUNING_IMAGE", DEFAULT_SERVE_IMAGE),
                   help="image of tuning Jobs")
    p.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    return p.parse_args(argv)


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
        server = WebhookServer(host="0.0.0.0", port=args.webhook_port, hosts=dns).start()
        config = render_validating_webhook_configuration(server.ca_bundle, service_name=svc,
                                                         service_namespace=ns)
        where = f"Service {ns}/{svc}"
    else:
        server = WebhookServer(host=args.webhook_host, port=args.webhook_port).start()
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
    setup_workspace_controller(
        mgr, workers=args.workers,
        options=Options(serve_image=args.serve_image, tuning_image=args.tuning_image),
    )
    return mgr


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    client = RestClient.from_kubeconfig(args.kubeconfig)
    webhook = start_webhook(args, client) if args.webhook_port is not None else None
    mgr = build_manager(args, client)
    log.info("starting: metrics :%s, health :%s, leader election %s",
             args.metrics_port, args.health_port, "on" if args.leader_elect else "off")
    try:
        return mgr.run_forever()
    finally:
        if webhook is not None and not args.webhook_service:
            stop_webhook(webhook, client)
        elif webhook is not None:
            webhook.stop()  # other replicas keep serving behind the Service
        client.close()


if __name__ == "__main__":
    sys.exit(main())
