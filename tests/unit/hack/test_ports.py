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


def test_ports_come_from_below_the_ephemeral_range_outside_rays_own() -> None:
    """Outgoing connections take their local ports from the ephemeral range, so a port picked
    there can be gone before our server binds it; Ray's worker and direct-ingress ports are
    Ray's."""
    ranges = ports.candidate_ports((32768, 60999))
    assert ranges and all(r.start >= 20000 and r.stop <= 32768 for r in ranges)
    assert not any(p in r for r in ranges for p in (30000, 30500, 31000))
    low, high = ports.ephemeral_range()
    for port in ports.free_ports(30):
        assert not low <= port <= high or not ports.candidate_ports((low, high))


def test_a_machine_whose_ephemeral_range_leaves_no_room_falls_back_to_the_kernel() -> None:
    assert ports.candidate_ports((1024, 65535)) == []
    assert ports._pick([]) == 0
