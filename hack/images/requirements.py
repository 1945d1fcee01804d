"""Print the requirements of pyproject.toml's base set plus the given extras, one a line.

``python3 hack/images/requirements.py pyproject.toml serve,tuning [--installed-must-match ray] > req.txt``

Why: the Dockerfiles install the dependencies in a layer of their own before they copy the
sources, so a source change rebuilds seconds of work instead of a 3 GB pip install. Self
references (``kaito-py[serve]`` inside ``tuning``) are expanded. Standard library only (the
bases have no pyyaml or packaging): this runs inside the image before anything is installed.

``--installed-must-match NAME`` also checks that the NAME already installed (the Ray image's ray)
is the version the requirements pin with ``==``: a base image of another Ray version fails the
build here instead of pip quietly replacing the image's Ray.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

_SELF = re.compile(r"^\s*(?P<name>[A-Za-z0-9._-]+)\s*\[(?P<extras>[^\]]*)\]\s*$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    me = _norm(project["name"])
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    out: list[str] = []
    seen: set[str] = set()

    def add(reqs: list[str]) -> None:
        for req in reqs:
            m = _SELF.match(req)
            if m and _norm(m["name"]) == me:
                expand([e.strip() for e in m["extras"].split(",") if e.strip()])
            elif req not in out:
                out.append(req)

    def expand(names: list[str]) -> None:
        for extra in names:
            if extra in seen:
                continue
            if extra not in optional:
                raise SystemExit(f"requirements.py: {pyproject} has no extra {extra!r} "
                                 f"(it has {', '.join(sorted(optional)) or 'none'})")
            seen.add(extra)
            add(optional[extra])

    add(project.get("dependencies", []))
    expand(extras)
    return out


def pinned_version(reqs: list[str], name: str) -> str | None:
    """The ``==`` version ``reqs`` pin for ``name`` (extras and markers aside), or None."""
    for req in reqs:
        m = re.match(r"^\s*([A-Za-z0-9._-]+)\s*(?:\[[^\]]*\])?\s*==\s*([^\s;,]+)", req)
        if m and _norm(m[1]) == _norm(name):
            return m[2]
    return None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("pyproject", type=Path)
    p.add_argument("extras", nargs="?", default="", help="comma-separated extras")
    p.add_argument("--installed-must-match", action="append", default=[], metavar="NAME")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    reqs = requirements(args.pyproject, [e.strip() for e in args.extras.split(",") if e.strip()])
    for name in args.installed_must_match:
        want = pinned_version(reqs, name)
        if want is None:
            raise SystemExit(f"requirements.py: the requirements pin no {name}==VERSION")
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"requirements.py: {name} is not installed in this image "
                             f"(expected {name}=={want} from the base image)") from None
        if have != want:
            raise SystemExit(f"requirements.py: the base image has {name} {have}, pyproject.toml "
                             f"pins {want}: use the base image of {name} {want}")
    print("\n".join(reqs))


if __name__ == "__main__":
    main()
