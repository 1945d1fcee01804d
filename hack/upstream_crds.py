"""The upstream CRDs every test and the demo install: KubeRay's ``ray.io`` and Karpenter's NodeClaim.

Why fetched, not generated: the RayService and NodeClaim we write are read by other projects'
controllers, so they must pass those projects' own schemas (a field our copy allowed but theirs
prunes would vanish silently in a cluster). The YAMLs ship inside the Go modules, and the Go
module proxy is reachable where release downloads are not, so ``go mod download -json`` gives a
checksum-verified module directory to copy them from. The KubeRay version is the one
hack/kuberay/go.mod builds the operator from (operator and schema never disagree); Karpenter's is
Kaito v0.12's (its go.mod requires sigs.k8s.io/karpenter v1.10.0).

The copies are cached under ``$KAITO_CRD_DIR`` (default ``~/.cache/kaito-py/crds``), one folder per
module version, so a second run is a stat per file. A fetch that fails raises ``FetchError`` with
what to do: tests fail on it, never skip.

Usage: ``python -m hack.upstream_crds`` (fetch all, print the paths).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KUBERAY_GO_MOD = REPO / "hack" / "kuberay" / "go.mod"
KUBERAY_MODULE = "github.com/ray-project/kuberay/ray-operator"
KARPENTER_MODULE = "sigs.k8s.io/karpenter"
KARPENTER_VERSION = "v1.10.0"  # what Kaito v0.12 builds against


class FetchError(RuntimeError):
    """An upstream CRD could not be fetched; the message says what to run or install."""


def cache_dir() -> Path:
    return Path(os.environ.get("KAITO_CRD_DIR") or Path.home() / ".cache" / "kaito-py" / "crds")


def kuberay_version(go_mod: Path = KUBERAY_GO_MOD) -> str:
    """The ray-operator version hack/kuberay/go.mod pins (the operator the tests build)."""
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(KUBERAY_MODULE)} (v\S+)", go_mod.read_text(), re.M)
    if not match:
        raise FetchError(f"{go_mod} does not require {KUBERAY_MODULE}")
    return match.group(1)


@dataclass(frozen=True)
class Source:
    """Some CRD files inside one version of one Go module."""

    module: str
    version: str
    subdir: str
    files: tuple[str, ...]

    @property
    def dest(self) -> Path:
        return cache_dir() / f"{self.module.replace('/', '_')}@{self.version}"


def sources() -> tuple[Source, ...]:
    # all three ray.io kinds: the KubeRay operator watches each and will not start without them
    ray = ("ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml", "ray.io_rayservices.yaml")
    return (
        Source(KUBERAY_MODULE, kuberay_version(), "config/crd/bases", ray),
        Source(KARPENTER_MODULE, KARPENTER_VERSION, "pkg/apis/crds", ("karpenter.sh_nodeclaims.yaml",)),
    )


def _module_dir(module: str, version: str) -> Path:
    """``go mod download`` of one module version (checksum-verified against go.sum's database)."""
    if shutil.which("go") is None:
        raise FetchError(
            f"'go' is not on PATH: the upstream CRDs come from {module}@{version} on the Go proxy"
        )
    env = {**os.environ, "GOWORK": "off", "GO111MODULE": "on"}
    with tempfile.TemporaryDirectory() as scratch:  # outside any module, so no go.mod is consulted
        proc = subprocess.run(
            ["go", "mod", "download", "-json", f"{module}@{version}"],
            cwd=scratch, env=env, capture_output=True, text=True, timeout=600,
        )
    try:
        info = json.loads(proc.stdout or "{}")
    except json.JSONDecodeError:
        info = {}
    if proc.returncode != 0 or not info.get("Dir"):
        detail = info.get("Error") or proc.stderr.strip() or proc.stdout.strip()
        raise FetchError(f"go mod download {module}@{version} failed: {detail}")
    return Path(info["Dir"])


def fetch(source: Source) -> list[Path]:
    """The cached copies of ``source``'s files, downloading the module first if any is missing."""
    wanted = [source.dest / name for name in source.files]
    if all(p.is_file() for p in wanted):
        return wanted
    module_dir = _module_dir(source.module, source.version)
    source.dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=source.dest.parent, prefix=".fetch."))
    try:
        for name in source.files:
            src = module_dir / source.subdir / name
            if not src.is_file():
                raise FetchError(f"{source.module}@{source.version} has no {source.subdir}/{name}")
            shutil.copyfile(src, tmp / name)
        if source.dest.exists():
            shutil.rmtree(source.dest)
        tmp.rename(source.dest)  # all files or none: a half-copied folder is never seen as cached
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return wanted


def crd_paths(names: Iterable[str] | None = None) -> list[Path]:
    """Cached upstream CRD files (all, or those with the given file names), fetched if needed."""
    paths = [p for source in sources() for p in fetch(source)]
    if names is None:
        return paths
    by_name = {p.name: p for p in paths}
    missing = sorted(set(names) - set(by_name))
    if missing:
        raise FetchError(f"no upstream CRD named {', '.join(missing)}; known: {', '.join(sorted(by_name))}")
    return [by_name[n] for n in names]


def main() -> int:
    try:
        for path in crd_paths():
            print(path)
    except FetchError as exc:
        print(f"upstream_crds: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
