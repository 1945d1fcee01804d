"""Load the SKU catalogue (``instance_types.json``) that the fake cloud launches from.

Why a file and not code: like kwok's ``--instance-types-file-path``, tests and the local demo
swap in their own catalogue (a tiny GPU, a SKU that is "sold out") without touching Python.
The shipped file names real Azure GPU SKUs with their real GPU counts and memory, so Workspaces
written for AKS run unchanged against the fake cloud; ``Standard_Fake_GPU`` is the demo's SKU.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from provisioner.cloud.base import InstanceType

DEFAULT_FILE = "instance_types.json"


def load_instance_types(path: str | Path | None = None) -> list[InstanceType]:
    """Read a JSON list of instance types; ``None`` means the catalogue shipped with the package."""
    if path is None:
        text = resources.files("provisioner.cloud").joinpath(DEFAULT_FILE).read_text()
    else:
        text = Path(path).read_text()
    raw = json.loads(text)
    if not isinstance(raw, list):
        raise ValueError(f"instance types file must hold a JSON list, got {type(raw).__name__}")
    types = [InstanceType.model_validate(item) for item in raw]
    names = [t.name for t in types]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate instance types: {', '.join(dupes)}")
    return types
