"""The loopback port allocator never hands out one port twice (CI once gave etcd's client and
peer URL the same port, because the kernel returns a just-closed port again)."""

from __future__ import annotations

import socket

from hack import ports


def test_repeated_calls_never_repeat_a_port_even_when_the_kernel_does(monkeypatch) -> None:
    # a kernel that always offers the same few ports, as a quiet machine may
    offered = iter([41000, 41000, 41001, 41000, 41001, 41002])
    real_socket = socket.socket

    class RepeatingSocket:
        def __init__(self) -> None:
            self._sock = real_socket()
            self._port = next(offered)

        def bind(self, addr: tuple[str, int]) -> None:
            self._sock.bind((addr[0], 0))

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self._port)

        def close(self) -> None:
            self._sock.close()

    monkeypatch.setattr(ports, "_handed_out", set())
    monkeypatch.setattr(ports.socket, "socket", RepeatingSocket)
    assert [ports.free_port(), ports.free_port(), ports.free_port()] == [41000, 41001, 41002]


def test_free_ports_are_distinct_and_bindable() -> None:
    got = ports.free_ports(20) + [ports.free_port() for _ in range(20)]
    assert len(set(got)) == 40
    for port in got[:5]:
        with socket.socket() as s:
            s.bind((ports.LOOPBACK, port))
