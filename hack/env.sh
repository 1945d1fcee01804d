#!/usr/bin/env bash
# Sourced by the README commands: makes (or reuses) the project's virtualenv under ~/.cache.
#
# Why under ~/.cache: CI runs in a fresh clone each time and torch alone is ~3 GB, so one venv
# is kept and only re-run through pip (incrementally) when the pins change. pip's own cache sits
# beside it. The project itself is installed editable, so the clone's code is what runs.
set -euo pipefail
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export KAITO_CACHE="${KAITO_CACHE:-$HOME/.cache/kaito-py}"
export KAITO_VENV="$KAITO_CACHE/venv"
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$HOME/.cache/pip}"
# the pins (base dependencies + every extra) decide whether the venv needs a pip run; other edits
# of pyproject.toml (ruff, pytest settings) must not trigger one
_want="$(sed -n '/^dependencies = \[/,/^\[project.scripts\]/p' "$_root/pyproject.toml" | sha256sum | cut -c1-16)"
mkdir -p "$KAITO_CACHE"
exec {_lock}>"$KAITO_CACHE/.venv.lock"
flock "$_lock"   # two shells setting up the same venv at once would corrupt it
if [[ ! -x "$KAITO_VENV/bin/python" ]]; then
  echo "creating python env in $KAITO_VENV (first run downloads torch, ~3 GB; cached afterwards)"
  rm -rf "$KAITO_VENV"
  python3 -m venv "$KAITO_VENV"
  "$KAITO_VENV/bin/pip" install --quiet --upgrade pip
fi
if [[ "$(cat "$KAITO_VENV/.pins" 2>/dev/null)" != "$_want" ]]; then
  echo "installing pinned dependencies into $KAITO_VENV (pip prints each download and its size)"
  # not --quiet: a first run fetches ~3 GB, and a newcomer must tell a slow download from a hang
  "$KAITO_VENV/bin/pip" install --progress-bar on -e "$_root[dev]" 2>&1 | grep --line-buffered -v '^Requirement already satisfied' || { echo "env.sh: pip install failed" >&2; exit 1; }
  echo "$_want" > "$KAITO_VENV/.pins"
fi
# the editable install points at whichever clone ran first; repoint it at this one (cheap)
if ! "$KAITO_VENV/bin/python" - "$_root" <<'PY'
import sys, pathlib, controller
sys.exit(0 if pathlib.Path(controller.__file__).resolve().parents[1] == pathlib.Path(sys.argv[1]).resolve() else 1)
PY
then
  "$KAITO_VENV/bin/pip" install --quiet --no-deps -e "$_root[dev]"
fi
flock -u "$_lock"
export PATH="$KAITO_VENV/bin:$PATH"
export KAITO_BIN_DIR="${KAITO_BIN_DIR:-$KAITO_CACHE/bin}"
