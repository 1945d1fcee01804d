#!/usr/bin/env bash
# Builds helm (helm.sh/helm/v3, pinned in go.mod here) from the Go module proxy into the cache.
#
# Why build it: no release downloads are reachable, the Go proxy is; the chart tests lint,
# render and install config/chart/kaito-py with the same helm a user runs. Like the control
# plane, a stamp keyed on go.mod/go.sum makes a second run a no-op; a failed build fails loudly.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${KAITO_BIN_DIR:-$HOME/.cache/kaito-py/bin}"
mkdir -p "$out"
command -v go >/dev/null || { echo "helm/build.sh: 'go' is not on PATH (Go >= 1.26 needed to build helm)" >&2; exit 1; }
version="$(sed -n 's#^[[:space:]]*helm.sh/helm/v3 \(v[^ ]*\).*#\1#p' "$here/go.mod" | head -1)"
[[ -n "$version" ]] || { echo "helm/build.sh: no helm.sh/helm/v3 version in $here/go.mod" >&2; exit 1; }
source "$here/../lib/gobuild.sh"
stamp="$out/.helm.stamp"
want="$(go_module_hash "$here")"
if build_is_current "$stamp" "$want" "$out/helm"; then
  echo "helm up to date in $out ($version)"
  exit 0
fi
go_build_env
cd "$here"
start=$(date +%s)
tmp="$(mktemp -d "$out/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "building helm $version into $out (cold: ~3 min on 2 cores; cached afterwards)"
# the Kubernetes version helm assumes offline (helm template, lint) is its client-go's, as the
# upstream Makefile sets it; left at the source default it would claim v1.20
k8s_minor="$(sed -n 's#^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' go.mod | head -1)"
[[ -n "$k8s_minor" ]] || { echo "helm/build.sh: no k8s.io/client-go version in go.mod" >&2; exit 1; }
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
for pkg in pkg/lint/rules pkg/chartutil; do
  ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$k8s_minor"
done
go_build_progress helm -trimpath -ldflags "$ldflags" -o "$tmp/helm" helm.sh/helm/v3/cmd/helm
"$tmp/helm" version --short >/dev/null || { echo "helm/build.sh: the built helm does not run" >&2; exit 1; }
mv -f "$tmp/helm" "$out/helm"
echo "$want" > "$stamp"
echo "helm built in $(( $(date +%s) - start ))s"
