"""Which hosts a tuning job may download datasets from: the public internet, nothing inside.

Why: a dataset URL is the Workspace author's, and the trainer fetches it from inside the cluster,
on a GPU node, next to the cloud's metadata services. Checking the URL's text at admission is
not enough (issue 11, item 5): a DNS name can resolve to a private address, ``2130706433``,
``0x7f000001`` and ``127.1`` are all 127.0.0.1 to the C resolver, a public URL can redirect to
``http://169.254.169.254/``. So the rules are one function of an address, applied

- at admission (``controller.api.validation``) to the URL's literal host, numeric forms
  included (no DNS there: admission must be fast and deterministic);
- in the trainer (``rayserve.tuning.data.fetch``) to every address the host resolves to, at the
  time of the fetch, and again for every redirect.

Refused: loopback, private (RFC 1918, ULA), link-local (169.254/16 holds the clouds' instance
metadata), unspecified, multicast, reserved, the carrier-grade NAT range 100.64/10 (cloud
providers' internal services live there), Azure's WireServer 168.63.129.16, IPv4-mapped IPv6 forms
of all of these, and the metadata host names. What is left (a name rebinding between our
resolution and the connection) is bounded by the job's deadline and said in docs/SECURITY.md.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

__all__ = ["BLOCKED_HOSTS", "address_problem", "host_problem", "literal_address", "url_problem"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Iterable[str]]

BLOCKED_HOSTS = frozenset({"localhost", "metadata", "metadata.google.internal", "metadata.azure.com"})
_EXTRA_BLOCKED = (
    ipaddress.ip_network("100.64.0.0/10"),  # carrier-grade NAT: cloud-internal services
    ipaddress.ip_network("168.63.129.16/32"),  # Azure WireServer
    ipaddress.ip_network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.ip_network("198.18.0.0/15"),  # benchmarking
)
_NUMERIC = re.compile(r"^[0-9a-fx.]+$")  # what inet_aton's legacy forms are made of


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` spells, in any form the C library accepts (``127.1``, ``2130706433``,
    ``0x7f000001``, ``[::1]``), or None for a name."""
    h = host.strip("[]").lower()
    try:
        return ipaddress.ip_address(h)
    except ValueError:
        pass
    if _NUMERIC.match(h) and any(c.isdigit() for c in h):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(h))
        except OSError:
            return None
    return None


def address_problem(ip: IPAddress) -> str | None:
    """Why a tuning job may not connect to ``ip``, or None."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified or ip.is_multicast
            or ip.is_reserved or any(ip in net for net in _EXTRA_BLOCKED if net.version == ip.version)):
        return f"a private, local or cloud-internal address ({ip})"
    return None


def _resolve(host: str) -> list[str]:
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)})


def host_problem(host: str, resolve: Resolver | None = _resolve) -> str | None:
    """Why ``host`` may not be fetched from, or None; ``resolve`` None checks the name's text only."""
    name = host.strip().rstrip(".").lower()
    if name in BLOCKED_HOSTS or name.endswith(".localhost"):
        return f"{host}, a local or metadata host"
    ip = literal_address(name)
    if ip is not None:
        return address_problem(ip)
    if resolve is None:
        return None
    try:
        addresses = list(resolve(name))
    except OSError as exc:
        return f"{host}, which does not resolve ({exc})"
    for addr in addresses:
        problem = address_problem(ipaddress.ip_address(addr.split("%", 1)[0]))
        if problem:
            return f"{host}, which resolves to {problem}"
    return None if addresses else f"{host}, which resolves to no address"


def url_problem(url: str, resolve: Resolver | None = _resolve) -> str | None:
    """Why ``url`` may not be fetched (not http(s), or its host is refused), or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http(s) URL"
    problem = host_problem(parts.hostname, resolve)
    if problem is None:
        return None
    return f"{url[:200]!r} points at {problem}; serve the data from a public host or use a volume"
