"""Loopback ports for the local processes we start (etcd, apiserver, Ray, Prometheus, ...).

Why one allocator, and why not the kernel's port 0: two races lost in CI.

- Asking the kernel for port 0, closing the socket and asking again can return the same number
  twice, because nothing listens on it yet: etcd once got one port for its client and its peer
  URL and died with "address already in use". This module remembers every port it handed out in
  this process and never returns one of them again.
- Port 0 hands out ports of the kernel's ephemeral range, the same range every outgoing
  connection on the machine takes its local port from. Between our pick and the server's bind
  (a ``ray start`` binds its raylet's ports seconds later) any client connection can take it: a
  raylet once died with "Failed to start the grpc server ... port is already used". Ports are
  therefore picked at random below the ephemeral range, where only explicit binds land, and above
  Ray's default worker ports (10002-19999); Serve's direct-ingress ports (30000-31000) are left
  out too. Where the machine's ephemeral range leaves no room for that window, port 0 it is.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

LOOPBACK = "127.0.0.1"
# below the ephemeral range, above Ray's worker ports, without Serve's direct-ingress ports
WINDOWS = ((20000, 30000), (31001, 32768))
MIN_WINDOW = 2000  # fewer ports than this left below the ephemeral range: use port 0 instead

_lock = threading.Lock()
_handed_out: set[int] = set()
_random = random.Random()


def ephemeral_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux's default if unreadable)."""
    try:
        low, high = (int(x) for x in path.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def candidate_ports(ephemeral: tuple[int, int]) -> list[range]:
    """The parts of ``WINDOWS`` outside ``ephemeral``; empty when they are too few to pick from."""
    low, high = ephemeral
    out = []
    for a, b in WINDOWS:
        for lo, hi in ((a, min(b, low)), (max(a, high + 1), b)):
            if hi > lo:
                out.append(range(lo, hi))
    return out if sum(len(r) for r in out) >= MIN_WINDOW else []


def _pick(ranges: list[range]) -> int:
    """A random port of ``ranges``, or 0 (the kernel's choice) without any."""
    if not ranges:
        return 0
    i = _random.randrange(sum(len(r) for r in ranges))
    for r in ranges:
        if i < len(r):
            return r[i]
        i -= len(r)
    raise AssertionError("unreachable")


def free_port(host: str = LOOPBACK) -> int:
    """A port free on ``host`` now that this process has not handed out before."""
    return free_ports(1, host)[0]


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """n distinct free ports, none handed out before by this process.

    The probe sockets stay open together until all n are found, so no number comes twice within
    the call; the registry covers repeats across calls.
    """
    ranges = candidate_ports(ephemeral_range())
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        with _lock:
            for _ in range(n * 200):
                if len(ports) == n:
                    break
                s = socket.socket()
                socks.append(s)
                try:
                    s.bind((host, _pick(ranges)))
                except OSError:  # taken: pick again
                    continue
                port = s.getsockname()[1]
                if port not in _handed_out:
                    _handed_out.add(port)
                    ports.append(port)
            if len(ports) < n:
                raise RuntimeError(f"found only {len(ports)} of {n} free ports on {host}")
        return ports
    finally:
        for s in socks:
            s.close()
