"""Which labels a Workspace author may put on GPU nodes, and label syntax.

Why this exists: ``resource.labelSelector.matchLabels`` is copied onto the workspace's Machines
and from there onto its Nodes (and into its pods' nodeSelector). Labels in the Kubernetes and
Karpenter domains are trusted by the rest of the cluster: ``kubernetes.io/hostname`` steers
topology spreading and pod placement, ``node-restriction.kubernetes.io/*`` exists precisely so
that workloads can be isolated on nodes whose labels no tenant (not even the kubelet) can set,
``karpenter.sh/*`` drives the provisioner. A user allowed to create Workspaces must not be able
to forge them, so these domains are refused the way Karpenter refuses them on a NodePool's
labels (``pkg/apis/v1/labels.go``: ``RestrictedLabelDomains``, matched with a suffix test, so a
subdomain such as ``topology.kubernetes.io`` is restricted too). Unlike Karpenter we grant no
exceptions (``node.kubernetes.io``, its well-known labels): the node's own kubelet and cloud set
those, and a Workspace has no business overriding them.

Label syntax follows apimachinery's ``IsQualifiedName`` (keys) and ``IsValidLabelValue``; the API
server does not check the keys and values of a map inside a custom resource, so nobody else
would before the provisioner tries to write them onto a Node.
"""

from __future__ import annotations

import re

from controller.api.machine import LABEL_MACHINE_TYPE
from controller.api.workspace import LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE

__all__ = [
    "CONTROLLER_LABELS",
    "RESTRICTED_LABEL_DOMAINS",
    "label_key_problem",
    "label_value_problem",
    "node_label_problem",
]

# Karpenter's RestrictedLabelDomains plus node-restriction.kubernetes.io, which Karpenter allows
# (a cluster admin's NodePool may set it) but a Workspace author must not.
RESTRICTED_LABEL_DOMAINS = ("kubernetes.io", "k8s.io", "karpenter.sh", "node-restriction.kubernetes.io")
# Set by the controller on every Machine; a user's value would be dropped without a word.
CONTROLLER_LABELS = (LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE, LABEL_MACHINE_TYPE)

_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_SYNTAX = "at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid label key (``[prefix/]name``), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return f"label key {key!r} has an empty prefix before '/'"
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return (
            f"label key {key!r}: the prefix {prefix!r} must be a DNS subdomain (lowercase letters, "
            "digits, '-' and '.', at most 253 characters)"
        )
    if len(name) > 63 or not _NAME.match(name):
        return f"label key {key!r}: the name {name!r} must be {_NAME_SYNTAX}"
    return None


def label_value_problem(key: str, value: str) -> str | None:
    """Why ``value`` is not a valid label value (empty is valid), or None."""
    if value == "" or (len(value) <= 63 and _NAME.match(value)):
        return None
    return f"label {key!r}: the value {value[:80]!r} must be empty or {_NAME_SYNTAX}"


def node_label_problem(key: str) -> str | None:
    """Why a Workspace may not put the (syntactically valid) label ``key`` on its nodes, or None."""
    if key in CONTROLLER_LABELS:
        return f"label {key!r} is set by the controller on the workspace's nodes; remove it"
    prefix = key.rpartition("/")[0]
    for domain in RESTRICTED_LABEL_DOMAINS:
        if prefix.endswith(domain):
            return (
                f"label {key!r} is in the restricted domain {domain!r}, which a workspace may not put on "
                "nodes; use a key in your own domain, e.g. 'apps' or 'example.com/team'"
            )
    return None
