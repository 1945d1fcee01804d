#!/usr/bin/env bash
# Installs the system tools the demo and the e2e test need, from Debian's packages.
# Prometheus is a real server (not a Python stand-in); apt needs root, which CI and sessions have.
set -euo pipefail
if ! command -v prometheus >/dev/null; then
  echo "installing prometheus (Debian package)"
  if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null; then
    echo "tools.sh: prometheus is missing and apt needs root: run 'apt-get install -y prometheus'" >&2; exit 1
  fi
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # the package may start its own service where an init system runs; we start our own per run
  $SUDO pkill -x prometheus 2>/dev/null || true
fi
command -v prometheus >/dev/null || { echo "tools.sh: prometheus still missing after apt" >&2; exit 1; }
