#!/usr/bin/env bash
# Installs the system tools the demo and the tests need, from Debian's packages.
# Prometheus is a real server (not a Python stand-in); buildah and mmdebstrap build the operator
# image (hack/images/build.sh) where no registry is reachable. apt needs root, which CI and
# sessions have.
set -euo pipefail
SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
updated=0
need() {  # need COMMAND PACKAGE [APT_ARGS...]: install the Debian package when COMMAND is missing
  local cmd="$1" pkg="$2"; shift 2
  command -v "$cmd" >/dev/null && return 0
  echo "installing $pkg (Debian package)"
  if [[ -n "$SUDO" ]] && ! command -v sudo >/dev/null; then
    echo "tools.sh: $cmd is missing and apt needs root: run 'apt-get install -y $pkg'" >&2; exit 1
  fi
  [[ $updated -eq 1 ]] || { $SUDO apt-get update -qq; updated=1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" "$pkg" >/dev/null
  command -v "$cmd" >/dev/null || { echo "tools.sh: $cmd still missing after apt" >&2; exit 1; }
}
if ! command -v prometheus >/dev/null; then
  need prometheus prometheus --no-install-recommends
  # the package may start its own service where an init system runs; we start our own per run
  $SUDO pkill -x prometheus 2>/dev/null || true
fi
# with their recommends: mmdebstrap checks the archive's keyring with gpg
need buildah buildah
need mmdebstrap mmdebstrap
