#!/usr/bin/env bash
# Builds the operator image from the real controller/Dockerfile with buildah, then checks it.
#
# Why this way: no container registry is reachable here (no `docker pull python:3.11-slim`), but
# Debian's archive is. So the base is made from Debian bookworm packages with mmdebstrap
# (python3 3.11, python3-venv, ca-certificates: what python:3.11-slim-bookworm gives the
# Dockerfile) and passed as --build-arg PYTHON_IMAGE; every COPY and RUN of the Dockerfile then
# runs as written, pip reaching PyPI. The checks run the built image as its own (non-root) user:
# `kaito-controller --help`, `kaito-provisioner --help`, the controller's webhook/reconciler
# imports, and `import torch` / `import ray` must fail.
#
# Cached under ~/.cache/kaito-py/images (KAITO_IMAGE_CACHE): the base image keyed on its
# package list, buildah's storage and layer cache, pip's cache mount, and a report keyed on a
# hash of every input of the image (Dockerfile, pyproject, the packages' files, this script), so
# a second run with nothing changed prints the cached report in about a second.
#
# Usage: hack/images/build.sh [--force] [--report FILE]
#   --force        rebuild and recheck even when the report for these inputs exists
#   --report FILE  also copy the JSON report to FILE
# Needs: buildah and mmdebstrap (Debian: apt-get install buildah mmdebstrap), root (mmdebstrap's
# root mode and buildah's chroot isolation), python3 with pyyaml (PYTHON overrides).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
force=0
report_copy=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --force) force=1 ;;
    --report) report_copy="$2"; shift ;;
    *) echo "build.sh: unknown argument $1 (usage: hack/images/build.sh [--force] [--report FILE])" >&2; exit 2 ;;
  esac
  shift
done

PY="${PYTHON:-python3}"
cache="${KAITO_IMAGE_CACHE:-$HOME/.cache/kaito-py/images}"
isolation="${KAITO_BUILDAH_ISOLATION:-chroot}"  # oci needs cgroup delegation that sandboxes lack
mirror="${KAITO_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm
t0=$(date +%s)
say() { echo "[images $(( $(date +%s) - t0 ))s] $*"; }

for tool in buildah mmdebstrap; do
  command -v "$tool" >/dev/null || {
    echo "build.sh: '$tool' is not on PATH (Debian: apt-get update && apt-get install -y buildah mmdebstrap)" >&2
    exit 1
  }
done
"$PY" -c 'import yaml' 2>/dev/null || { echo "build.sh: $PY cannot import yaml (set PYTHON)" >&2; exit 1; }
mkdir -p "$cache"

# --- the pins: config/images.yaml is the one place -----------------------------------------------
read -r op_repo op_tag dockerfile <<<"$("$PY" -c '
import yaml
d = yaml.safe_load(open("config/images.yaml"))
op = d["images"]["operator"]
print(op["repository"], op["tag"], op["dockerfile"])')"
op_image="$op_repo:$op_tag"

# --- buildah: its own storage under the cache; overlay where the kernel allows it, else vfs ------
driver="${KAITO_BUILDAH_DRIVER:-}"
if [[ -z "$driver" ]]; then
  driver=overlay
  probe="$cache/.overlay-probe"
  rm -rf "$probe"; mkdir -p "$probe"/{l,u,w,m}
  if ! mount -t overlay overlay -o "lowerdir=$probe/l,upperdir=$probe/u,workdir=$probe/w" "$probe/m" 2>/dev/null; then
    driver=vfs
  else
    umount "$probe/m"
  fi
  rm -rf "$probe"
fi
B=(buildah --root "$cache/storage-$driver" --runroot "$cache/run-$driver" --storage-driver "$driver")
# buildah keeps RUN --mount=type=cache directories under $TMPDIR: keep pip's cache with ours
export TMPDIR="$cache/tmp"
mkdir -p "$TMPDIR"
have_image() { "${B[@]}" inspect --type image "$1" >/dev/null 2>&1; }

# --- 1. the base: python:3.11-slim-bookworm's equivalent from Debian packages --------------------
base_pkgs="python3,python3-venv,ca-certificates"
# like debian:bookworm-slim (python:3.11-slim's base): no man pages, docs or locales
slim_opts=(--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*'
           --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*'
           --dpkgopt='path-exclude=/usr/share/info/*')
base_key="$(printf '%s\n' "$suite" "$base_pkgs" "$mirror" "${slim_opts[@]}" | sha256sum | cut -c1-12)"
base_image="localhost/kaito-py/base-python3.11-$suite:$base_key"
base_tar="$cache/base-$suite-$base_key.tar"
if ! have_image "$base_image"; then
  say "making the base rootfs: Debian $suite minbase + $base_pkgs with mmdebstrap (cold: ~1 min)"
  # Check-Valid-Until off: a snapshot mirror's Release files may be past their Valid-Until date
  rm -f "$base_tar"
  mmdebstrap --variant=minbase --format=tar --include="$base_pkgs" "${slim_opts[@]}" \
    --aptopt='Acquire::Check-Valid-Until "false"' "$suite" "$base_tar" "$mirror"
  say "importing $base_tar as $base_image"
  ctr="$("${B[@]}" from scratch)"
  "${B[@]}" add "$ctr" "$base_tar" / >/dev/null
  "${B[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 \
    --label org.opencontainers.image.description="Debian $suite minbase + $base_pkgs (mmdebstrap): a stand-in for python:3.11-slim-$suite" \
    "$ctr"
  "${B[@]}" commit -q "$ctr" "$base_image" >/dev/null
  "${B[@]}" rm "$ctr" >/dev/null
  rm -f "$base_tar"  # the image holds it now
fi

# --- 2. the operator image from the real Dockerfile ------------------------------------------------
inputs="$( {
  sha256sum "$dockerfile" .dockerignore pyproject.toml config/images.yaml hack/images/requirements.py \
    hack/images/build.sh
  find controller provisioner rayserve presets -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum
  echo "$base_image $driver"
} | sha256sum | cut -c1-16)"
build_tag="localhost/kaito-py/operator:build-$inputs"
report="$cache/operator-$inputs.json"
if [[ $force -eq 0 && -s "$report" ]] && have_image "$build_tag"; then
  say "operator image up to date for these inputs ($inputs): $op_image"
  cat "$report"
  [[ -n "$report_copy" ]] && cp "$report" "$report_copy"
  exit 0
fi

# The host's pip configuration and CA bundle, during RUN steps only (not in the image): a host
# that reaches PyPI through a proxy or mirror builds the same way.
mounts=()
if [[ "${KAITO_IMAGE_HOST_PIP:-1}" == 1 ]]; then
  [[ -f /etc/pip.conf ]] && mounts+=(-v /etc/pip.conf:/etc/pip.conf:ro)
  [[ -f /etc/ssl/certs/ca-certificates.crt ]] && mounts+=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
fi
say "building $op_image from $dockerfile on $base_image (buildah $driver, isolation $isolation; cold: minutes, pip's progress below)"
b0=$(date +%s)
"${B[@]}" bud --isolation "$isolation" --layers --pull=false "${mounts[@]}" \
  -f "$dockerfile" --build-arg PYTHON_IMAGE="$base_image" -t "$build_tag" -t "$op_image" .
build_s=$(( $(date +%s) - b0 ))
say "built in ${build_s}s"

# --- 3. check the image, as the user it runs as ----------------------------------------------------
ctr="$("${B[@]}" from --pull=false "$op_image")"
trap '"${B[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
run() { "${B[@]}" run --isolation "$isolation" "$ctr" -- "$@"; }
fail=0
check() {  # check NAME CMD...: prints the verdict, records it
  local name="$1"; shift
  if out="$("$@" 2>&1)"; then echo "$name=ok" >>"$report.part"; say "check $name: ok"
  else echo "$name=FAILED" >>"$report.part"; say "check $name: FAILED"; echo "$out" | tail -20; fail=1; fi
}
rm -f "$report.part"
user="$("${B[@]}" inspect --type image --format '{{.OCIv1.Config.User}}' "$op_image")"
uid="$(run id -u)"
[[ "$uid" != 0 && "$user" == "65532:65532" ]] && echo "non_root=ok" >>"$report.part" || { echo "non_root=FAILED" >>"$report.part"; fail=1; }
say "check non_root: image USER $user, id -u $uid"
check controller_help run sh -c 'kaito-controller --help | grep -q -- --webhook-port'
check provisioner_help run sh -c 'kaito-provisioner --help | grep -q -- --cloud'
check imports run python3 -c 'import controller.main, controller.webhook, controller.workspace.reconciler, provisioner.main, rayserve.tuning.config'
check no_torch run sh -c '! python3 -c "import torch" 2>/dev/null'
check no_ray run sh -c '! python3 -c "import ray" 2>/dev/null'
venv_kb="$(run du -sk /opt/kaito | cut -f1)"
# the images' uncompressed sizes: the sum of their layer tars (what a node unpacks)
"${B[@]}" inspect --type image --format '{{.Manifest}}' "$op_image" >"$report.op"
"${B[@]}" inspect --type image --format '{{.Manifest}}' "$base_image" >"$report.base"
"$PY" - "$report.part" "$report.op" "$report.base" "$op_image" "$build_tag" "$base_image" "$build_s" \
  "$venv_kb" "$driver" >"$report.tmp" <<'EOF'
import json, sys
checks_file, op_manifest, base_manifest, op_image, build_tag, base_image, build_s, venv_kb, driver = sys.argv[1:]
checks = dict(line.strip().split("=", 1) for line in open(checks_file) if "=" in line)
def size(manifest):
    return sum(layer["size"] for layer in json.load(open(manifest))["layers"])
print(json.dumps({
    "image": op_image, "build_tag": build_tag, "base": base_image, "storage_driver": driver,
    "build_seconds": int(build_s), "size_bytes": size(op_manifest), "base_size_bytes": size(base_manifest),
    "venv_bytes": int(venv_kb) * 1024, "checks": checks,
    "ok": all(v == "ok" for v in checks.values()),
}, indent=2))
EOF
rm -f "$report.part" "$report.op" "$report.base"
if [[ $fail -ne 0 ]]; then
  cat "$report.tmp"; rm -f "$report.tmp"
  echo "build.sh: the operator image failed its checks (above)" >&2
  exit 1
fi
mv -f "$report.tmp" "$report"
# older builds' tags and reports go (each holds a ~200 MB venv layer); the layer cache stays
for old in $("${B[@]}" images --format '{{.Name}}:{{.Tag}}' | grep '^localhost/kaito-py/operator:build-' || true); do
  [[ "$old" == "$build_tag" ]] || "${B[@]}" rmi "$old" >/dev/null 2>&1 || true
done
find "$cache" -maxdepth 1 -name 'operator-*.json' ! -name "operator-$inputs.json" -delete
[[ -n "$report_copy" ]] && cp "$report" "$report_copy"
cat "$report"
say "done: $op_image (also $build_tag), $(( $("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["size_bytes"])' "$report") / 1048576 )) MiB uncompressed, in $cache/storage-$driver"
