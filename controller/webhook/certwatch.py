"""Serving certificates read from a directory (a mounted Secret) and reloaded when they change.

Why: with two controller replicas (or during a rolling update) every replica must serve a cert
that the one ``caBundle`` trusts, so in a cluster the cert is not made per process but mounted
from a Secret that the chart (or cert-manager) owns. cert-manager rotates it in place: the
kubelet swaps the Secret volume's ``..data`` symlink, so the files' content changes under the
same paths. A watcher that compares the bytes every few seconds (files of a few KiB) sees that
without inotify and without trusting mtimes across a symlink swap; ``on_change`` then reloads
the TLS context (new handshakes use the new cert; open connections finish on the old one) and
re-patches the caBundle.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CERT_FILE, KEY_FILE, CA_FILE = "tls.crt", "tls.key", "ca.crt"


class CertDirError(ValueError):
    """The certificate directory lacks a file or holds unreadable ones: the message names which."""


@dataclass(frozen=True)
class CertDir:
    """``tls.crt`` / ``tls.key`` / ``ca.crt`` in one directory (the layout of a kubernetes.io/tls
    Secret that also carries its CA, as the chart's Secret and cert-manager's do)."""

    path: Path

    @property
    def cert_file(self) -> Path:
        return self.path / CERT_FILE

    @property
    def key_file(self) -> Path:
        return self.path / KEY_FILE

    @property
    def ca_file(self) -> Path:
        return self.path / CA_FILE

    def check(self) -> None:
        """Raise CertDirError naming every missing or empty file."""
        missing = [p.name for p in (self.cert_file, self.key_file, self.ca_file)
                   if not p.is_file() or p.stat().st_size == 0]
        if missing:
            raise CertDirError(f"webhook cert dir {self.path} lacks {', '.join(missing)} "
                               f"(mount the webhook Secret with tls.crt, tls.key and ca.crt)")

    def ca_bundle(self) -> bytes:
        return self.ca_file.read_bytes()

    def fingerprint(self) -> str:
        """A digest of all three files: equal digests mean nothing to reload."""
        h = hashlib.sha256()
        for p in (self.cert_file, self.key_file, self.ca_file):
            try:
                h.update(p.read_bytes())
            except OSError:
                h.update(b"\0missing")
            h.update(b"\0")
        return h.hexdigest()


class CertWatcher:
    """Calls ``on_change()`` (from its own thread) whenever the files' content changes.

    A failing ``on_change`` (a half-written pair, an API server hiccup on the caBundle patch) is
    logged and tried again on the next poll, since the fingerprint is only advanced on success.
    """

    def __init__(self, certs: CertDir, on_change: Callable[[], None], interval: float = 10.0) -> None:
        self.certs = certs
        self.on_change = on_change
        self.interval = interval
        self._seen = certs.fingerprint()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> bool:
        """Look once; True if a change was applied."""
        now = self.certs.fingerprint()
        if now == self._seen:
            return False
        try:
            self.certs.check()
            self.on_change()
        except Exception as exc:
            log.warning("webhook certificates in %s changed but could not be applied yet: %s",
                        self.certs.path, exc)
            return False
        self._seen = now
        log.info("webhook certificates in %s reloaded", self.certs.path)
        return True

    def start(self) -> CertWatcher:
        self._thread = threading.Thread(target=self._run, name="kaito-webhook-certs", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
