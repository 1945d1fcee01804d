#!/usr/bin/env bash
# Sourced by the Go build scripts: `go build` that shows it is alive.
#
# Why: a cold build of kube-apiserver or helm compiles ~2000 packages over several minutes on 2
# cores, and plain `go build` prints nothing until it is done, so a newcomer cannot tell a slow
# build from a hang. `go build -v` names each package as it is compiled; this counts them and
# prints a line every 100 packages with the elapsed time (nothing for a fully cached build).

# go_build_progress LABEL GO-BUILD-ARGS...
go_build_progress() {
  local label="$1"; shift
  local start=$SECONDS n=0 line
  # go's exit status is what counts (PIPESTATUS[0]), not the counting loop's
  go build -v "$@" 2>&1 | while IFS= read -r line; do
    # -v lines are bare import paths; anything with a space or a colon is a compiler message
    if [[ "$line" == *" "* || "$line" == *":"* ]]; then echo "$line"; continue; fi
    n=$((n + 1))
    if (( n % 100 == 0 )); then echo "  $label: $n packages compiled ($((SECONDS - start))s)"; fi
  done
  local rc=${PIPESTATUS[0]}
  if (( rc != 0 )); then echo "go build of $label failed (exit $rc)" >&2; return "$rc"; fi
}

# go_module_hash DIR: what a cached build of the Go module in DIR is keyed on: go.mod, go.sum and
# the build.sh beside them (its flags shape the binary too).
go_module_hash() { cat "$1/go.mod" "$1/go.sum" "$1/build.sh" | sha256sum | cut -d' ' -f1; }

# build_is_current STAMP WANT BINARY...: true when every binary exists and STAMP records WANT.
build_is_current() {
  local stamp="$1" want="$2" bin; shift 2
  for bin in "$@"; do [[ -x "$bin" ]] || return 1; done
  [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]
}

# go_build_env: reproducible, offline-after-download builds from the pinned go.mod/go.sum only.
go_build_env() { export CGO_ENABLED=0 GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=readonly; }
