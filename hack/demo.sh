#!/usr/bin/env bash
# The README's main job: all set-up, then the local demo (Ctrl-C stops everything).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source hack/env.sh
hack/controlplane/build.sh
hack/helm/build.sh
hack/kuberay/build.sh
python -m hack.upstream_crds
hack/tools.sh
python -m hack.tiny_model
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec python -m hack.demo "$@"
