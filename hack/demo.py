"""The README's main job: apply a Workspace with kubectl and get a /chat answer, locally.

Starts the real control plane, the controller (with its webhook), the provisioner over the fake
GPU cloud, the KubeRay stand-in with a local Ray head and a Prometheus server; applies
config/samples/workspace_tiny_phi_3.yaml; shows progress while it waits; prints the result;
then keeps running until Ctrl-C (or exits at once with --exit) and stops everything.
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import threading
from pathlib import Path

from hack.localstack import REPO, LocalStack, phase_table

SAMPLE = REPO / "config" / "samples" / "workspace_tiny_phi_3.yaml"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=None, help="logs and state (default: a temp dir)")
    ap.add_argument("--sample", type=Path, default=SAMPLE)
    ap.add_argument("--prompt", default="What is Kubernetes?")
    ap.add_argument("--exit", action="store_true", help="stop after answering instead of waiting for Ctrl-C")
    args = ap.parse_args(argv)

    import yaml

    sample = yaml.safe_load(args.sample.read_text())
    name, namespace = sample["metadata"]["name"], sample["metadata"].get("namespace", "default")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kaito-demo-"))
    print(f"logs in {workdir}")
    stack = LocalStack(workdir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stack.start()
        print(stack.kubectl("apply", "-f", str(args.sample)).strip())
        stack.wait_workspace(name, namespace)
        print("\n$ kubectl get workspace")
        print(stack.kubectl("get", "workspace", "-n", namespace))
        url = stack.serve_url(name, namespace)
        answer = stack.chat(url, args.prompt)
        print(f"$ curl -X POST {url}/chat -d '{{\"prompt\": \"{args.prompt}\"}}'\n{answer}\n")
        print(f"Ray dashboard: {stack.dashboard_url}  (Serve tab shows the application)")
        ready = stack.readiness_series(name, namespace)
        query = f'kaito_workspace_ready{{name="{name}",namespace="{namespace}"}}'
        print(f"Prometheus http://127.0.0.1:{stack.ports['prometheus']}  query {query}:")
        for condition, value in sorted(ready.items()):
            print(f"  condition={condition} = {value}")
        ws = stack.wait_timeline(name, namespace)
        print("\nwhere the time went, from kubectl apply to the first answer (status.timeline, written by "
              "the controller; kubectl get workspace -o yaml shows it):\n" + phase_table(ws))
        print("\nthe local stack's own start:\n" + stack.timeline.table())
        if not args.exit:
            print("\nrunning; Ctrl-C stops everything")
            try:
                while not stop.wait(1.0):
                    pass
            except KeyboardInterrupt:
                pass
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    raise SystemExit(main())
