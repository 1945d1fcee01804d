"""Which node API a cluster speaks: Karpenter v1 ``NodeClaim``s or the seed's ``Machine``s.

Why chosen at start-up, once: the Workspace controller creates one of the two and the provisioner
serves the same one, so both ask the same question (``--node-api``, default ``auto``) and get the
same answer from the API server: NodeClaims where their CRD is served (Karpenter, Kaito v0.12 and
today's gpu-provisioner install it), else Machines (Kaito v0.3's clusters). Neither installed is
an error that names both, not a silent pick.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from controller.api.kinds import MACHINES, NODECLAIMS, kind_of
from controller.api.machine import Machine, NodeRequest
from controller.api.nodeclaim import NodeClaim
from controller.runtime.client import Client, ResourceKind
from controller.runtime.errors import NotFound

CHOICES = ("auto", "nodeclaim", "machine")


@dataclass(frozen=True)
class NodeAPI:
    """One API shape of "a node asked of the cloud": its model class and where it lives."""

    name: str
    model: type[NodeRequest]

    @property
    def kind(self) -> ResourceKind:
        return kind_of(self.model)

    def parse(self, obj: dict) -> NodeRequest:
        return self.model.model_validate(obj)


NODECLAIM_API = NodeAPI("nodeclaim", NodeClaim)
MACHINE_API = NodeAPI("machine", Machine)
BY_NAME = {api.name: api for api in (NODECLAIM_API, MACHINE_API)}


def served(client: Client, kind: ResourceKind) -> bool:
    """True when the API server serves ``kind`` (its CRD is installed and established)."""
    try:
        client.list(kind, limit=1)
    except NotFound:
        return False
    return True


class NoNodeAPI(RuntimeError):
    """Neither NodeClaims nor Machines are served."""


def resolve(client: Client, choice: str = "auto", is_served: Callable[[Client, ResourceKind], bool] = served
            ) -> NodeAPI:
    """The API named by ``choice``, or for ``auto`` the one the cluster serves (NodeClaim first)."""
    if choice != "auto":
        return BY_NAME[choice]
    for api, kind in ((NODECLAIM_API, NODECLAIMS), (MACHINE_API, MACHINES)):
        if is_served(client, kind):
            return api
    raise NoNodeAPI(f"neither {NODECLAIMS} nor {MACHINES} is served: install Karpenter's NodeClaim CRD "
                    "(or Kaito v0.3's Machine CRD), or pass --node-api")
