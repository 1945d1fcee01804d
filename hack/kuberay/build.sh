#!/usr/bin/env bash
# Builds the KubeRay operator (github.com/ray-project/kuberay/ray-operator, pinned in go.mod here)
# from the Go module proxy into the cache.
#
# Why build it: the integration test runs the real operator against the local API server, so the
# RayService we write meets KubeRay's own defaulting and reconciliation, not only our stand-in.
# The ray.io CRDs the tests install come from this same module version (hack/upstream_crds.py
# reads it from go.mod here), so operator and schema never disagree. Like helm, a stamp keyed on
# go.mod/go.sum makes a second run a no-op; a failed build fails loudly.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${KAITO_BIN_DIR:-$HOME/.cache/kaito-py/bin}"
mkdir -p "$out"
command -v go >/dev/null || { echo "kuberay/build.sh: 'go' is not on PATH (Go >= 1.26 needed to build KubeRay)" >&2; exit 1; }
version="$(sed -n 's#^[[:space:]]*github.com/ray-project/kuberay/ray-operator \(v[^ ]*\).*#\1#p' "$here/go.mod" | head -1)"
[[ -n "$version" ]] || { echo "kuberay/build.sh: no ray-operator version in $here/go.mod" >&2; exit 1; }
source "$here/../lib/gobuild.sh"
stamp="$out/.kuberay.stamp"
want="$(go_module_hash "$here")"
if build_is_current "$stamp" "$want" "$out/kuberay-operator"; then
  echo "kuberay-operator up to date in $out ($version)"
  exit 0
fi
go_build_env
cd "$here"
start=$(date +%s)
tmp="$(mktemp -d "$out/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "building kuberay-operator $version into $out (cold: a few minutes on 2 cores; cached afterwards)"
go_build_progress kuberay-operator -trimpath -ldflags "-s -w" -o "$tmp/kuberay-operator" \
  github.com/ray-project/kuberay/ray-operator
"$tmp/kuberay-operator" --help >/dev/null 2>&1 || { echo "kuberay/build.sh: the built operator does not run" >&2; exit 1; }
mv -f "$tmp/kuberay-operator" "$out/kuberay-operator"
echo "$want" > "$stamp"
echo "kuberay-operator built in $(( $(date +%s) - start ))s"
