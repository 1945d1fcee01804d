#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager (for garbage collection) and etcd from the Go module proxy into a cache under $HOME.
#
# Why: no release downloads or images are reachable, but the Go proxy is. go.mod here requires
# k8s.io/kubernetes and replaces each staging module with its published v0.Y.Z twin, so
# `go build` compiles upstream's unchanged main packages. A stamp file keyed on go.sum makes a
# second run a no-op (seconds), while a changed go.mod/go.sum rebuilds.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${KAITO_BIN_DIR:-$HOME/.cache/kaito-py/bin}"
mkdir -p "$out"
command -v go >/dev/null || { echo "build.sh: 'go' is not on PATH; the control plane is built from Go modules (Go >= 1.26 needed)" >&2; exit 1; }
kv="$(sed -n 's#^[[:space:]]*k8s.io/kubernetes \(v[^ ]*\).*#\1#p' "$here/go.mod" | head -1)"
minor="$(echo "$kv" | cut -d. -f2)"
source "$here/../lib/gobuild.sh"
stamp="$out/.stamp"
want="$(go_module_hash "$here")"
if build_is_current "$stamp" "$want" "$out/kube-apiserver" "$out/kube-controller-manager" "$out/etcd"; then
  echo "control plane binaries up to date in $out ($kv)"
  exit 0
fi
go_build_env
cd "$here"
start=$(date +%s)
# build into a scratch dir and rename into place: running servers keep their old inode
tmp="$(mktemp -d "$out/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$kv \
  -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
for cmd in kube-apiserver kube-controller-manager; do
  echo "building $cmd $kv into $out (cold: ~5 min each on 2 cores; cached afterwards)"
  go_build_progress "$cmd" -trimpath -ldflags "$ldflags" -o "$tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd"
done
echo "building etcd"
go_build_progress etcd -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
mv -f "$tmp"/kube-apiserver "$tmp"/kube-controller-manager "$tmp"/etcd "$out/"
echo "$want" > "$stamp"
echo "control plane built in $(( $(date +%s) - start ))s"
