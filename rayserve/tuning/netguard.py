"""Which hosts a tuning job may download datasets from: the public internet, nothing inside.

Why: a dataset URL is the Workspace author's, and the trainer fetches it from inside the cluster,
on a GPU node, next to the cloud's metadata services. Checking the URL's text at admission is
not enough (issue 11, item 5): a DNS name can resolve to a private address, ``2130706433``,
``0x7f000001`` and ``127.1`` are all 127.0.0.1 to the C resolver, a public URL can redirect to
``http://169.254.169.254/``. So the rules are one function of an address, applied

- at admission (``controller.api.validation``) to the URL's literal host, numeric forms
  included (no DNS there: admission must be fast and deterministic);
- in the trainer (``rayserve.tuning.data.fetch``) to every address the host resolves to, at the
  time of the fetch, and again for every redirect; the trainer then connects to one of exactly
  those addresses (``vetted_addresses``), never resolving the name a second time, so a name that
  answers a public address to the check and a private one to the connect (DNS rebinding) gets
  nowhere.

Refused: loopback, private (RFC 1918, ULA), link-local (169.254/16 holds the clouds' instance
metadata), unspecified, multicast, reserved, the carrier-grade NAT range 100.64/10 (cloud
providers' internal services live there), Azure's WireServer 168.63.129.16, IPv4-mapped IPv6 forms
of all of these, and the metadata host names.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

__all__ = [
    "BLOCKED_HOSTS",
    "HostRefused",
    "address_problem",
    "host_problem",
    "literal_address",
    "url_problem",
    "vetted_addresses",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Iterable[str]]
AddressCheck = Callable[[IPAddress], str | None]


class HostRefused(ValueError):
    """A host a tuning job may not connect to; the message says why (as ``host_problem``)."""

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


def resolve(host: str) -> list[str]:
    """Every address the system resolver gives ``host`` (the trainer's default resolver)."""
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)})


_resolve = resolve  # the name the defaults below were written with


def vetted_addresses(host: str, resolve: Resolver = resolve, check: AddressCheck = address_problem
                     ) -> list[IPAddress]:
    """The addresses of ``host`` (resolved once, with ``resolve``), every one of which passed
    ``check``: what a fetch connects to, so the address checked is the address connected to.
    Raises ``HostRefused`` when the name is a local one, does not resolve, or any address fails."""
    name = _normal(host)
    if _blocked_name(name):
        raise HostRefused(f"{host}, a local or metadata host")
    ip = literal_address(name)
    if ip is not None:
        if problem := check(ip):
            raise HostRefused(problem)
        return [ip]
    try:
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolve(name)]
    except OSError as exc:
        raise HostRefused(f"{host}, which does not resolve ({exc})") from None
    for addr in addresses:
        if problem := check(addr):
            raise HostRefused(f"{host}, which resolves to {problem}")
    if not addresses:
        raise HostRefused(f"{host}, which resolves to no address")
    return addresses


def host_problem(host: str, resolve: Resolver | None = _resolve) -> str | None:
    """Why ``host`` may not be fetched from, or None; ``resolve`` None checks the name's text only."""
    name = _normal(host)
    if resolve is None and literal_address(name) is None and not _blocked_name(name):
        return None  # a name, and no resolving asked for (admission)
    try:
        vetted_addresses(host, resolve or _resolve)  # resolves nothing but a name
    except HostRefused as exc:
        return str(exc)
    return None


def _normal(host: str) -> str:
    return host.strip().rstrip(".").lower()


def _blocked_name(name: str) -> bool:
    return name in BLOCKED_HOSTS or name.endswith(".localhost")


def url_problem(url: str, resolve: Resolver | None = _resolve) -> str | None:
    """Why ``url`` may not be fetched (not http(s), or its host is refused), or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http(s) URL"
    problem = host_problem(parts.hostname, resolve)
    return None if problem is None else refusal(url, problem)


def refusal(url: str, problem: str) -> str:
    """The one wording of a refused dataset URL, at admission and in the trainer."""
    return f"{url[:200]!r} points at {problem}; serve the data from a public host or use a volume"
