"""A loopback stand-in for a Service in front of several pods: TCP round-robin over live backends.

Why: the chart puts every controller replica behind the ``kaito-webhook`` Service, and the point
of the shared certificate is that the API server may reach *any* replica. Locally there is no
kube-proxy, so this proxy plays it: each accepted connection goes to the next backend that
accepts a connect (a dead replica is skipped, as an endpoint that failed readiness would be),
bytes are copied both ways untouched (TLS ends at the replica, so the API server checks the
replica's own cert), and it counts connections per backend so a test can see who answered.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import threading
from collections import Counter

log = logging.getLogger(__name__)


class ServiceProxy:
    """``ServiceProxy([port_a, port_b]).start()``; ``.port`` is what clients dial."""

    def __init__(self, backends: list[int] | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._listen = socket.create_server((host, port))
        self._listen.settimeout(0.5)
        self._backends: list[int] = list(backends or [])
        self._lock = threading.Lock()
        self._turn = itertools.count()
        self.connections: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._listen.getsockname()[1])

    def set_backends(self, ports: list[int]) -> None:
        """Replace the endpoints (pods came or went)."""
        with self._lock:
            self._backends = list(ports)

    def start(self) -> ServiceProxy:
        self._thread = threading.Thread(target=self._accept_loop, name="service-proxy", daemon=True)
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listen.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _connect(self) -> tuple[socket.socket, int] | None:
        with self._lock:
            backends = list(self._backends)
        start = next(self._turn)
        for i in range(len(backends)):
            port = backends[(start + i) % len(backends)]
            try:
                return socket.create_connection((self.host, port), timeout=2.0), port
            except OSError:
                continue  # not listening (stopped replica): the next endpoint
        return None

    def _serve(self, client: socket.socket) -> None:
        picked = self._connect()
        if picked is None:
            log.warning("service proxy :%s has no live backend", self.port)
            client.close()
            return
        upstream, port = picked
        with self._lock:
            self.connections[port] += 1
        upstream.settimeout(None)
        client.settimeout(None)

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
        back.start()
        pump(client, upstream)
        back.join(timeout=30)
        client.close()
        upstream.close()

    def stop(self) -> None:
        self._stop.set()
        self._listen.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
