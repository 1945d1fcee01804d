"""The webhook's limits over real HTTPS: a large UPDATE review is answered, a slow or idle client
cannot hold a worker past the request deadline, connections are bounded, and a malformed request
gets an answer rather than a dropped connection (with failurePolicy Fail, anything unanswered
refuses the user's write)."""

from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest
from test_webhook_server import GOOD, admission_review, post

from controller.webhook import WebhookServer


@pytest.fixture()
def small_server():
    """Two workers, one waiting slot, a 1.5 s deadline: small enough to exhaust in a test."""
    with WebhookServer(host="127.0.0.1", port=0, workers=2, pending=1, request_deadline=1.5) as srv:
        yield srv


def _tls(srv: WebhookServer) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cadata=srv.ca_bundle.decode())
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def _raw_request(srv: WebhookServer, head: bytes, body: bytes = b"") -> bytes:
    with _tls(srv) as s:
        s.sendall(head + body)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_an_update_review_of_five_mib_is_answered():
    """Object and old object, 2.5 MiB each: over the old 3 MiB cap, under controller-runtime's 7."""
    big = {**GOOD, "metadata": {**GOOD["metadata"], "annotations": {"note": "x" * (5 * 2**19)}}}
    with WebhookServer(host="127.0.0.1", port=0) as srv:
        status, answer = post(srv, admission_review(big, operation="UPDATE", old=big))
    assert status == 200 and answer["response"]["allowed"] is True


@pytest.mark.parametrize(
    ("length", "code"), [("lots", b"400"), ("-5", b"400"), ("0", b"400"), (str(8 * 2**20), b"413")]
)
def test_a_bad_content_length_is_answered(length, code):
    with WebhookServer(host="127.0.0.1", port=0) as srv:
        head = f"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n"
        reply = _raw_request(srv, head.encode())
    assert reply.startswith(b"HTTP/1.1 " + code), reply[:200]


def test_a_missing_content_length_is_answered():
    with WebhookServer(host="127.0.0.1", port=0) as srv:
        reply = _raw_request(srv, b"POST /validate HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 411"), reply[:200]


def test_a_slow_client_is_cut_at_the_deadline(small_server):
    """A byte every 0.2 s resets any per-read timeout; the total deadline still ends it."""
    started = time.monotonic()
    with _tls(small_server) as s:
        head = b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
        s.sendall(head)
        cut = False
        while time.monotonic() - started < 10:
            try:
                s.sendall(b"x")
                s.settimeout(0.2)
                if s.recv(1) == b"":
                    cut = True
                    break
            except TimeoutError:
                continue
            except (OSError, ssl.SSLError):
                cut = True
                break
    elapsed = time.monotonic() - started
    assert cut and elapsed < 4, f"the slow client held its connection for {elapsed:.1f}s"


def _refused(srv: WebhookServer) -> bool:
    """Whether a new connection is closed without being served."""
    try:
        with _tls(srv) as s:
            s.settimeout(2)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            return s.recv(1) == b""
    except (OSError, ssl.SSLError):
        return True


def test_connections_are_bounded_and_idle_ones_do_not_starve_the_server():
    """Three silent TCP connections fill both workers and the waiting slot: a fourth is closed at
    once, with no thread of its own; the deadline then ends the silent ones and reviews are
    answered again."""
    with WebhookServer(host="127.0.0.1", port=0, workers=2, pending=1, request_deadline=2.5) as srv:
        silent = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(3)]
        try:
            time.sleep(0.3)
            threads = threading.active_count()
            assert all(_refused(srv) for _ in range(5))
            assert threading.active_count() <= threads + 1  # no thread per refused connection
            time.sleep(2.5)  # past the deadline: the silent ones are cut
            status, answer = post(srv, admission_review(GOOD))
            assert status == 200 and answer["response"]["allowed"] is True
        finally:
            for s in silent:
                s.close()
