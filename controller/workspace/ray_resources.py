"""The CPUs the serve config's actors ask Ray for, and the CPUs a worker node must offer them.

Why one module for both: they are two sides of one fit. The serve config's placement group puts
a replica's coordinator and its first pipeline stage in one bundle (``rayserve/builder.py``), and
KubeRay gives a worker node ``--num-cpus`` from its container's CPU request, rounded up
(``generateRayStartCommand`` in KubeRay's ``common/pod.go``). A worker offering less than bundle 0
needs means the bundle fits on no node (the head has no GPU, so it cannot take it either) and
Serve waits forever ("taken more than 30s to be scheduled"). Deriving the request from the asks
keeps them from drifting apart.
"""

from __future__ import annotations

import math

from controller.workspace.plan import Plan

FAKE_CPUS = 0.5  # the fake SKU's model runs on the local machine's few CPUs: ask for little
REAL_CPUS = 1.0  # on a GPU node: the coordinator (tokenizer, scheduler, HTTP) and each stage


def actor_cpus(plan: Plan) -> float:
    """What the replica's coordinator, and each stage, asks for."""
    return FAKE_CPUS if plan.fake_gpu else REAL_CPUS


def worker_node_cpus(plan: Plan) -> int:
    """The worker container's CPU request: room for bundle 0 (coordinator + first stage)."""
    return math.ceil(2 * actor_cpus(plan))
