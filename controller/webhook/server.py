"""The webhook's HTTPS server: stdlib http.server + ssl, in a background thread.

POST /validate answers AdmissionReviews (see admission.py); GET /healthz says ok. With no cert files
given, a CA and serving cert are generated at start (certs.py) and the CA is exposed as ``ca_bundle``
for the ValidatingWebhookConfiguration; with cert files (a mounted Secret, certwatch.py) the pair is
loaded from them and ``reload_certs`` picks up a rotation.

Limits, because with ``failurePolicy: Fail`` an unanswered or refused review refuses the write:

- the body cap is controller-runtime's 7 MiB: an UPDATE review carries the object and the old
  object, and refusing a large one would refuse every update of it, the finalizer removal
  included, leaving the object stuck Terminating;
- connections are served by a fixed pool (``workers``), with at most ``pending`` more waiting;
  beyond that a connection is closed at once rather than given a thread;
- each connection has a total deadline (``request_deadline``, from accept to the last byte,
  handshake included): a socket timeout restarts on every read, so a client sending a byte a
  second would otherwise hold a thread forever. One request per connection (``Connection:
  close``), so the deadline is the request's, and an idle keep-alive connection holds no worker;
- every malformed request is answered (400, 411, 413), never dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from controller.api.datasources import DEFAULT_MOUNT_POLICY, MountPolicy
from controller.webhook.admission import review
from controller.webhook.certs import ServingCerts, generate_serving_certs
from presets.registry import Catalog

log = logging.getLogger(__name__)

VALIDATE_PATH = "/validate"
MAX_BODY = 7 * 1024 * 1024  # controller-runtime's webhook limit: an UPDATE carries two objects
HANDSHAKE_TIMEOUT = 30.0  # per socket operation; REQUEST_DEADLINE bounds the whole connection
REQUEST_DEADLINE = 30.0  # the API server waits at most 30 s (timeoutSeconds' maximum) anyway
WORKERS = 16
PENDING = 64


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("webhook %s - " + fmt, self.address_string(), *args)

    def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.close_connection = True  # one request per connection: see the module docstring
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _body_length(self) -> int | None:
        """The request's Content-Length, or None after answering why it cannot be read."""
        raw = self.headers.get("Content-Length")
        if raw is None:
            self._send(411, b"Content-Length is required", "text/plain")
            return None
        try:
            length = int(raw.strip())
        except ValueError:
            self._send(400, f"Content-Length {raw[:40]!r} is not a number".encode(), "text/plain")
            return None
        if length <= 0:
            self._send(400, b"an AdmissionReview body is required", "text/plain")
            return None
        if length > MAX_BODY:
            self._send(413, f"the body is over {MAX_BODY} bytes".encode(), "text/plain")
            return None
        return length

    def do_GET(self) -> None:
        if self.path in ("/healthz", "/readyz"):
            self._send(200, b"ok", "text/plain")
        else:
            self._send(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path != VALIDATE_PATH:
            self._send(404, b"not found", "text/plain")
            return
        length = self._body_length()
        if length is None:
            return
        try:
            body = json.loads(self.rfile.read(length))
            answer = review(body, catalog=self.server.catalog, mounts=self.server.mounts)
        except (ValueError, TypeError) as exc:
            self._send(400, f"bad AdmissionReview: {exc}".encode(), "text/plain")
            return
        except Exception:  # a bug must answer 500, not kill the thread and hang the API server
            log.exception("webhook failed on a request")
            self._send(500, b"internal error", "text/plain")
            return
        self._send(200, json.dumps(answer).encode())


def _cut(sock: socket.socket) -> None:
    """End a connection past its deadline: a blocked read in its worker returns at once. The
    plain socket's shutdown, so the TLS object another thread is reading is left alone."""
    with contextlib.suppress(OSError):  # already closed
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Server(HTTPServer):
    """An HTTPServer whose connections run on a bounded pool, each under a total deadline."""

    catalog: Catalog | None = None
    mounts: MountPolicy = DEFAULT_MOUNT_POLICY

    def __init__(self, address: tuple[str, int], handler: type[_Handler], *, workers: int, pending: int,
                 deadline: float) -> None:
        super().__init__(address, handler)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kaito-webhook")
        self.slots = threading.BoundedSemaphore(workers + pending)
        self.capacity = workers + pending
        self.deadline = deadline

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            log.warning("webhook: %s connections in flight or waiting; closing the one from %s",
                        self.capacity, client_address)
            self.shutdown_request(request)
            return
        timer = threading.Timer(self.deadline, _cut, args=(request,))
        timer.daemon = True
        timer.start()  # from accept: time spent waiting for a worker counts too
        try:
            self.pool.submit(self._work, request, client_address, timer)
        except RuntimeError:  # the pool is shut down: we are stopping
            timer.cancel()
            self.shutdown_request(request)
            self.slots.release()

    def _work(self, request: Any, client_address: Any, timer: threading.Timer) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            timer.cancel()
            self.shutdown_request(request)
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("webhook connection from %s ended with an error", client_address, exc_info=True)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # TLS handshake here, in the request's thread, so a slow client cannot stall accept()
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            request.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            log.debug("webhook TLS handshake with %s failed: %s", client_address, exc)
            return
        super().finish_request(request, client_address)

    def server_close(self) -> None:
        super().server_close()
        self.pool.shutdown(wait=False, cancel_futures=True)


class WebhookServer:
    """``WebhookServer(port=0).start()``; then ``.url`` and ``.ca_bundle`` go into the webhook config."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        ca_bundle: bytes | None = None,
        hosts: list[str] | None = None,
        catalog: Catalog | None = None,
        mounts: MountPolicy = DEFAULT_MOUNT_POLICY,
        workers: int = WORKERS,
        pending: int = PENDING,
        request_deadline: float = REQUEST_DEADLINE,
    ) -> None:
        self.host = host
        self._limits = {"workers": workers, "pending": pending, "deadline": request_deadline}
        self._port = port
        self._catalog = catalog
        self._mounts = mounts  # the operator's CSI drivers and node path prefix (--allowed-csi-drivers)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if cert_file is None or key_file is None:
            certs: ServingCerts = generate_serving_certs(hosts or [host])
            self._tmp = tempfile.TemporaryDirectory(prefix="kaito-webhook-")
            cert_file, key_file = certs.write(Path(self._tmp.name))
            ca_bundle = certs.ca_pem
        self.cert_file, self.key_file = cert_file, key_file
        self.ca_bundle = ca_bundle or b""
        self._httpd: _Server | None = None
        self._ctx: ssl.SSLContext | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd else self._port

    @property
    def url(self) -> str:
        """The validate endpoint, for a ValidatingWebhookConfiguration's clientConfig.url."""
        return f"https://{self.host}:{self.port}{VALIDATE_PATH}"

    def start(self) -> WebhookServer:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        self._ctx = ctx
        httpd = _Server((self.host, self._port), _Handler, **self._limits)
        httpd.catalog = self._catalog
        httpd.mounts = self._mounts
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="kaito-webhook", daemon=True)
        self._thread.start()
        log.info("webhook serving on %s", self.url)
        return self

    def reload_certs(self, ca_bundle: bytes | None = None) -> None:
        """Load the cert files again (rotated in place): new handshakes use them at once.

        The pair is first loaded into a scratch context: a failed ``load_cert_chain`` leaves a
        context half-loaded (new cert, old key), so only a pair that loads cleanly reaches the
        live context, which swaps it for connections accepted from then on. A bad pair raises
        here and the old one stays in use.
        """
        if self._ctx is None:
            raise RuntimeError("reload_certs() before start()")
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(self.cert_file), str(self.key_file))
        self._ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        if ca_bundle is not None:
            self.ca_bundle = ca_bundle

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> WebhookServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
