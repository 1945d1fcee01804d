"""AKS agent pool names for Machines.

Why: AKS allows Linux pool names of 1-11 lowercase letters and digits starting with a letter
(the gpu-provisioner README; 12 is the API limit, 11 leaves room for Windows-compatible tooling),
while Machine names are any DNS subdomain. The pool name must be derived from the Machine name
alone and deterministically, so that after a crash or restart the provisioner finds the pool it
may already have created instead of launching a second one. A name that already fits (Kaito's
``ws`` + 9 hex digits) is used as is; anything else becomes a readable prefix plus a hash.
"""

from __future__ import annotations

import hashlib
import re

MAX_POOL_NAME = 11
_VALID = re.compile(r"^[a-z][a-z0-9]{0,10}$")
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_HASH_LEN = 7


def is_valid_pool_name(name: str) -> bool:
    return bool(_VALID.match(name))


def _base36(data: bytes, length: int) -> str:
    n = int.from_bytes(data, "big")
    out = []
    for _ in range(length):
        n, r = divmod(n, 36)
        out.append(_ALPHABET[r])
    return "".join(out)


def agent_pool_name(machine_name: str) -> str:
    """The agent pool name for ``machine_name``: itself if valid, else ``<prefix><7 base36 hash>``."""
    if not machine_name:
        raise ValueError("machine name must not be empty")
    if is_valid_pool_name(machine_name):
        return machine_name
    cleaned = re.sub(r"[^a-z0-9]", "", machine_name.lower())
    prefix = cleaned[: MAX_POOL_NAME - _HASH_LEN]
    if not prefix or not prefix[0].isalpha():
        prefix = ("m" + prefix)[: MAX_POOL_NAME - _HASH_LEN]
    return prefix + _base36(hashlib.sha256(machine_name.encode()).digest(), _HASH_LEN)
