"""Loopback ports for the local processes we start (etcd, apiserver, Ray, Prometheus, ...).

Why one allocator: asking the kernel for port 0, closing the socket and asking again can return
the same number twice, because nothing listens on it yet. CI once gave etcd's client and peer
URLs the same port, and etcd died with "address already in use". This module remembers every
port it handed out in this process and never returns one of them again, so two calls in a row
always give two different ports. (Another process can still take a port in the gap before our
server binds it; that race is the kernel's and is rare, while the repeat was ours.)
"""

from __future__ import annotations

import socket
import threading

LOOPBACK = "127.0.0.1"

_lock = threading.Lock()
_handed_out: set[int] = set()


def free_port(host: str = LOOPBACK) -> int:
    """A port free on ``host`` now that this process has not handed out before."""
    return free_ports(1, host)[0]


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """n distinct free ports, none handed out before by this process.

    The probe sockets stay open together until all n are found, so the kernel cannot give one
    number twice within the call; the registry covers repeats across calls.
    """
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        with _lock:
            while len(ports) < n:
                s = socket.socket()
                socks.append(s)
                s.bind((host, 0))
                port = s.getsockname()[1]
                if port not in _handed_out:
                    _handed_out.add(port)
                    ports.append(port)
        return ports
    finally:
        for s in socks:
            s.close()
