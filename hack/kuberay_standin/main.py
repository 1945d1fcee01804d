"""``kaito-kuberay-standin``: run RayServices' serveConfigV2 on a local Ray cluster, KubeRay-style.

    kaito-kuberay-standin --kubeconfig .kaito-run/kubeconfig --state-file .kaito-run/standin.json

Starts ``ray start --head`` on loopback (free ports; stopped again on SIGTERM/SIGINT), plus one
``ray start --address`` worker node per worker Pod of each RayService, or attaches to a running
head with ``--ray-address``, then reconciles every RayService until signalled. A
RayService's apps answer at ``controller.serve_endpoint(rayservice)`` (``http://127.0.0.1:<port>/<ns>/<name>``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

from hack.kuberay_standin.ray_auth import TOKEN_ENV
from hack.kuberay_standin.ray_head import RAY_ENV, RayHead


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="kaito-kuberay-standin", description=__doc__.split("\n\n")[0])
    p.add_argument("--kubeconfig", help="kubeconfig path (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
    p.add_argument("--namespace", help="watch only this namespace (default: all)")
    p.add_argument(
        "--ray-address",
        help="attach to a running Ray head's dashboard (e.g. http://127.0.0.1:8265) instead of starting one;"
        " it is not stopped on exit",
    )
    p.add_argument(
        "--ray-token-auth",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Ray's token auth on the head and its nodes, as KubeRay v1.6 sets it up (default); the token"
        " is $RAY_AUTH_TOKEN if set (also what --ray-address is called with), else generated",
    )
    p.add_argument(
        "--serve-haproxy",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="Serve's HAProxy ingress on the head and its nodes, as kaito-controller --serve-haproxy puts"
        " it in the Ray containers (rayserve.spec.HAPROXY_ENV)",
    )
    p.add_argument("--serve-port", type=int, help="Serve HTTP port (default: a free port)")
    p.add_argument("--dashboard-port", type=int, help="Ray dashboard port of a started head (default: free)")
    p.add_argument(
        "--metrics-export-port",
        type=int,
        help="Ray's Prometheus metrics port of a started head (default: free)",
    )
    p.add_argument("--ray-temp-dir", help="Ray's --temp-dir (default: a fresh short /tmp/krs-* dir)")
    p.add_argument("--num-cpus", type=int, default=2, help="logical CPUs of the local head (default 2)")
    p.add_argument("--num-gpus", type=int, default=0, help="logical GPUs to declare on the head (default 0)")
    p.add_argument(
        "--resources", type=json.loads, default={}, help='custom resources, JSON: {"name": amount}'
    )
    p.add_argument(
        "--object-store-memory", type=int, default=100 * 1024 * 1024, help="bytes (default 100 MiB)"
    )
    p.add_argument(
        "--python-path",
        action="append",
        default=[],
        help="prepended to PYTHONPATH of the Ray head and its workers, so import_paths resolve"
        " (repeatable; the current directory is always added)",
    )
    p.add_argument(
        "--worker-nodes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one local Ray worker node per worker Pod of each RayService, joined to the head (default;"
        " off with --ray-address); --no-worker-nodes runs every replica on the head",
    )
    p.add_argument("--poll-interval", type=float, default=2.0, help="status poll period in s (KubeRay: 2)")
    p.add_argument("--health-port", type=int, help="serve /healthz and /readyz here (0: a free port)")
    p.add_argument("--metrics-port", type=int, help="serve /metrics here (0: a free port)")
    p.add_argument("--state-file", type=Path, help="write dashboard/Serve URLs and ports here as JSON")
    p.add_argument("--ray-log", type=Path, help="log file of `ray start` (default: in Ray's temp dir)")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # the local apiserver's self-signed certificate: one warning per request otherwise
    warnings.filterwarnings("ignore", message="Unverified HTTPS request")
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)

    from controller.runtime import RestClient
    from hack.kuberay_standin.standin import Standin
    from rayserve.spec import HAPROXY_ENV

    head = RayHead(
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        resources=args.resources,
        object_store_memory=args.object_store_memory,
        python_path=[*args.python_path, os.getcwd()],
        serve_port=args.serve_port,
        dashboard_port=args.dashboard_port,
        metrics_port=args.metrics_export_port,
        temp_dir=args.ray_temp_dir,
        log_path=args.ray_log,
        token_auth=args.ray_token_auth,
        auth_token=os.environ.get(TOKEN_ENV) or None,
        extra_env=dict(HAPROXY_ENV) if args.serve_haproxy else {},
    )
    standin = Standin(
        RestClient.from_kubeconfig(args.kubeconfig),
        head,
        ray_address=args.ray_address,
        namespace=args.namespace,
        poll_interval=args.poll_interval,
        health_port=args.health_port,
        metrics_port=args.metrics_port,
        state_file=args.state_file,
        worker_nodes=args.worker_nodes,
    )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    standin.start()
    print(json.dumps(standin.state()), flush=True)
    try:
        while not done.wait(1.0):
            if not head.running:
                logging.error("the Ray head exited; stopping")
                return 1
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
