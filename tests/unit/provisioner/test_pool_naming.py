"""AKS agent pool names: valid, deterministic, and distinct for distinct Machines."""

from __future__ import annotations

import pytest

from provisioner.cloud.naming import agent_pool_name, is_valid_pool_name


def test_kaito_style_names_are_used_verbatim() -> None:
    assert agent_pool_name("ws0a1b2c3d4") == "ws0a1b2c3d4"
    assert agent_pool_name("a") == "a"


@pytest.mark.parametrize(
    "name",
    ["phi-3-mini-0", "Workspace.With.Dots", "0starts-with-digit", "a" * 253, "ws0a1b2c3d4e", "-", "x.y"],
)
def test_other_names_become_valid_and_stable(name: str) -> None:
    pool = agent_pool_name(name)
    assert is_valid_pool_name(pool), pool
    assert len(pool) <= 11
    assert agent_pool_name(name) == pool


def test_readable_prefix_is_kept() -> None:
    assert agent_pool_name("phi-3-mini-0").startswith("phi3")
    assert agent_pool_name("0abc").startswith("m0ab")


def test_distinct_machines_get_distinct_pools() -> None:
    names = [f"workspace-{i}-machine" for i in range(2000)]
    assert len({agent_pool_name(n) for n in names}) == len(names)


def test_empty_name_is_rejected() -> None:
    with pytest.raises(ValueError):
        agent_pool_name("")
