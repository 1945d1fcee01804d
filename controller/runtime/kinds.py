"""Where a kind lives in the REST API, and the core kinds every room of the tree reads or writes.

Why one module: a kind declared ad hoc in each file that needs it is four spellings of the same
fact, and a typo in one (a wrong group, ``namespaced`` forgotten) shows up only against a server.
Kinds of our own CRDs are derived from their models in ``controller/api/kinds.py``; this module
stays generic and knows only Kubernetes' built-in kinds.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True)
class ResourceKind:
    """Where a kind lives in the REST API: /api/v1 for the core group, /apis/<group>/<version> else."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The REST path; namespace is ignored for cluster-scoped kinds, omitted to list across all."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
            if subresource:
                base += f"/{subresource}"
        return base

    def __str__(self) -> str:
        return f"{self.plural}.{self.group or 'core'}/{self.version}"


# --- core/v1 ----------------------------------------------------------------------------------------
NAMESPACES = ResourceKind(group="", version="v1", plural="namespaces", kind="Namespace", namespaced=False)
NODES = ResourceKind(group="", version="v1", plural="nodes", kind="Node", namespaced=False)
SERVICES = ResourceKind(group="", version="v1", plural="services", kind="Service")
PODS = ResourceKind(group="", version="v1", plural="pods", kind="Pod")
CONFIGMAPS = ResourceKind(group="", version="v1", plural="configmaps", kind="ConfigMap")
EVENTS = ResourceKind(group="", version="v1", plural="events", kind="Event")
NETWORKPOLICIES = ResourceKind(group="networking.k8s.io", version="v1", plural="networkpolicies",
                               kind="NetworkPolicy")
SECRETS = ResourceKind(group="", version="v1", plural="secrets", kind="Secret")

# --- other built-in groups --------------------------------------------------------------------------
JOBS = ResourceKind(group="batch", version="v1", plural="jobs", kind="Job")
DEPLOYMENTS = ResourceKind(group="apps", version="v1", plural="deployments", kind="Deployment")
CLUSTER_ROLES = ResourceKind(
    group="rbac.authorization.k8s.io",
    version="v1",
    plural="clusterroles",
    kind="ClusterRole",
    namespaced=False,
)
LEASES = ResourceKind(group="coordination.k8s.io", version="v1", plural="leases", kind="Lease")
CUSTOM_RESOURCE_DEFINITIONS = ResourceKind(
    group="apiextensions.k8s.io",
    version="v1",
    plural="customresourcedefinitions",
    kind="CustomResourceDefinition",
    namespaced=False,
)
VALIDATING_WEBHOOK_CONFIGURATIONS = ResourceKind(
    group="admissionregistration.k8s.io",
    version="v1",
    plural="validatingwebhookconfigurations",
    kind="ValidatingWebhookConfiguration",
    namespaced=False,
)
