"""Pushing a tuned adapter as a container image that ``inference.adapters[].source.image`` can use.

Why an image and why this shape: an inference workspace puts each adapter in place with an init
container that runs the adapter image and copies its ``/data`` (``inference.adapter_volumes``).
So the tuning Job publishes exactly that: a small image, ``busybox`` plus one layer holding the
adapter files under ``/data``. ``crane append`` (go-containerregistry) builds and pushes it
without a Docker daemon, authenticating with the ``tuning.output.imagePushSecret`` (a
docker-registry Secret) mounted as ``$DOCKER_CONFIG/config.json``.

The pusher is a second container of the tuning pod. The trainer runs under a small shell wrapper
that writes its exit code to ``EXIT_MARKER`` on the shared output volume; the pusher waits for
that file, pushes only after a successful run, and exits 0 either way so the pod's outcome is the
trainer's (Kaito uses a sentinel file and a sidecar in the same way).
"""

from __future__ import annotations

import shlex

CRANE_IMAGE = "gcr.io/go-containerregistry/crane/debug:v0.20.2"  # :debug has the busybox shell
BASE_IMAGE = "busybox:1.36.1"  # sh + cp, what the adapter init container runs
AUTH_DIR = "/kaito/push-auth"
EXIT_MARKER = "/mnt/results/.kaito-exit-code"

# Runs in the pusher container; the env carries ADAPTER_DIR, OUTPUT_IMAGE, BASE_IMAGE, EXIT_MARKER.
PUSH_SCRIPT = r"""set -eu
echo "waiting for the trainer to finish ($EXIT_MARKER)"
until [ -f "$EXIT_MARKER" ]; do sleep "${POLL_SECONDS:-5}"; done
rc="$(cat "$EXIT_MARKER")"
if [ "$rc" != "0" ]; then
  echo "tuning failed (exit $rc): nothing to push"
  exit 0
fi
if [ ! -f "$ADAPTER_DIR/adapter_config.json" ]; then
  echo "no adapter_config.json in $ADAPTER_DIR: nothing to push" >&2
  exit 1
fi
work="$(mktemp -d)"
mkdir -p "$work/layer/data"
cp -r "$ADAPTER_DIR"/. "$work/layer/data/"
rm -f "$work/layer/data/$(basename "$EXIT_MARKER")"
tar -C "$work/layer" -cf "$work/adapter.tar" data
crane append --base "$BASE_IMAGE" --new_layer "$work/adapter.tar" --new_tag "$OUTPUT_IMAGE"
echo "pushed the adapter in $ADAPTER_DIR as $OUTPUT_IMAGE"
"""


def record_exit_code(container: dict) -> dict:
    """``container`` with its command wrapped so the exit code lands in ``EXIT_MARKER``."""
    argv = [*container["command"], *container.get("args", [])]
    wrapped = f'{shlex.join(argv)}; rc=$?; echo "$rc" > {EXIT_MARKER}; exit "$rc"'
    return {**{k: v for k, v in container.items() if k != "args"}, "command": ["sh", "-c", wrapped]}


def pusher_container(output_image: str, adapter_dir: str, push_secret: str) -> tuple[dict, dict]:
    """(the pusher container, the volume of its registry credentials)."""
    volume = {
        "name": "push-auth",
        "secret": {"secretName": push_secret, "items": [{"key": ".dockerconfigjson", "path": "config.json"}]},
    }
    container = {
        "name": "adapter-pusher",
        "image": CRANE_IMAGE,
        "command": ["sh", "-c", PUSH_SCRIPT],
        "env": [
            {"name": "ADAPTER_DIR", "value": adapter_dir},
            {"name": "OUTPUT_IMAGE", "value": output_image},
            {"name": "BASE_IMAGE", "value": BASE_IMAGE},
            {"name": "EXIT_MARKER", "value": EXIT_MARKER},
            {"name": "DOCKER_CONFIG", "value": AUTH_DIR},
        ],
        "volumeMounts": [
            {"name": "output", "mountPath": "/mnt/results", "readOnly": True},
            {"name": "push-auth", "mountPath": AUTH_DIR, "readOnly": True},
        ],
    }
    return container, volume
