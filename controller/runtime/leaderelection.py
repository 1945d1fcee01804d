"""Leader election on a coordination.k8s.io/v1 Lease, ported from client-go tools/leaderelection.

Why: two replicas of a controller must never reconcile at once (they would fight over the same
objects); the standby must take over quickly when the leader dies.

How (same rules as client-go):

* The Lease names a holder and a leaseDurationSeconds. Every write carries the resourceVersion read
  just before, so two candidates racing for it cannot both win: one gets 409 Conflict.
* Expiry is judged on the candidate's *own* monotonic clock: "the record has not changed for
  lease_duration since I first saw it", never by comparing the holder's renewTime timestamp with
  our wall clock, so clock skew between machines cannot cause two leaders.
* The leader renews every retry_period; if it has not renewed successfully for renew_deadline
  (< lease_duration) it steps down on its own, before any other candidate may consider the lease
  expired. That ordering is what makes "never both lead" hold.
* On a clean stop the leader releases the lease by clearing holderIdentity, so the standby takes
  over on its next retry instead of waiting out the lease.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from controller.runtime import metrics
from controller.runtime.client import AlreadyExists, Client, Conflict, NotFound
from controller.runtime.kinds import LEASES
from controller.runtime.rest import RestClient

log = logging.getLogger(__name__)

__all__ = ["LEASES", "LeaderElector", "default_identity"]


def _now_micro() -> str:
    """MicroTime as the API expects it: RFC 3339 with microseconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _safe_call(callback: Callable[..., Any] | None, *args: Any) -> None:
    """User callbacks must not kill the election thread (that would keep a dead leader's lease)."""
    if callback is None:
        return
    try:
        callback(*args)
    except Exception:
        log.exception("leader election callback %r failed", callback)


def default_identity() -> str:
    return f"{socket.gethostname()}_{uuid.uuid4()}"


class LeaderElector:
    """Campaign for a Lease in a background thread; callbacks fire on gaining and losing it."""

    def __init__(
        self,
        client: Client,
        lease_name: str,
        namespace: str,
        identity: str | None = None,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_started_leading: Callable[[], Any] | None = None,
        on_stopped_leading: Callable[[], Any] | None = None,
        on_new_leader: Callable[[str], Any] | None = None,
        release_on_cancel: bool = True,
    ) -> None:
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        if isinstance(client, RestClient):
            # lease calls must give up well inside renew_deadline, or a hung request could keep a
            # leader acting past the moment another candidate may take over
            client = RestClient(
                client.api_client, request_timeout=max(0.5, min(client.request_timeout, renew_deadline / 2))
            )
        self.client = client
        self.lease_name = lease_name
        self.namespace = namespace
        self.identity = identity or default_identity()
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.on_new_leader = on_new_leader
        self.release_on_cancel = release_on_cancel
        self._leading = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observed_spec: dict | None = None
        self._observed_time = 0.0  # monotonic time when _observed_spec last changed
        self._observed_rv: str | None = None
        self._last_renew = 0.0
        self.leader: str | None = None  # last holder we observed
        self._m_status = metrics.LEADER_ELECTION_MASTER_STATUS.labels(lease_name)

    # --- public API -------------------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        """Leading, and the last successful renew is younger than renew_deadline (so even a renew
        call stuck in the network cannot leave us believing we lead past the deadline)."""
        return self._leading.is_set() and time.monotonic() - self._last_renew < self.renew_deadline

    def start(self) -> LeaderElector:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self.run, name=f"leader-{self.lease_name}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop campaigning; a leader releases the lease (if release_on_cancel) and steps down."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout if timeout is not None else self.lease_duration + 5)
        self._thread = None

    def wait_for_leadership(self, timeout: float | None = None) -> bool:
        return self._leading.wait(timeout)

    def run(self) -> None:
        """Acquire (blocking until leader or stopped), then renew until lost or stopped."""
        try:
            if not self._acquire():
                return
            self._become_leader()
            self._renew_loop()
        finally:
            if self._leading.is_set():
                # step down first (callbacks stop the controllers), then release: nobody can take
                # the lease while we still act as leader
                self._step_down()
                if self._stop.is_set() and self.release_on_cancel:
                    self._release()

    # --- phases -----------------------------------------------------------------------------------
    def _acquire(self) -> bool:
        while not self._stop.is_set():
            if self._try_acquire_or_renew():
                return True
            self._stop.wait(self.retry_period)
        return False

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.retry_period):
            if self._try_acquire_or_renew():
                continue
            if time.monotonic() - self._last_renew >= self.renew_deadline:
                log.warning(
                    "%s: failed to renew lease %s/%s within %.1fs; stepping down",
                    self.identity,
                    self.namespace,
                    self.lease_name,
                    self.renew_deadline,
                )
                return
            if self.leader not in (None, "", self.identity):
                log.warning(
                    "%s: lease %s/%s taken by %s", self.identity, self.namespace, self.lease_name, self.leader
                )
                return

    def _become_leader(self) -> None:
        self._leading.set()
        self._m_status.set(1)
        log.info("%s: became leader of %s/%s", self.identity, self.namespace, self.lease_name)
        _safe_call(self.on_started_leading)

    def _step_down(self) -> None:
        self._leading.clear()
        self._m_status.set(0)
        log.info("%s: stopped leading %s/%s", self.identity, self.namespace, self.lease_name)
        _safe_call(self.on_stopped_leading)

    # --- one attempt --------------------------------------------------------------------------
    def _spec(self, transitions: int, acquire_time: str) -> dict:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_duration)),
            "acquireTime": acquire_time,
            "renewTime": _now_micro(),
            "leaseTransitions": transitions,
        }

    def _try_acquire_or_renew(self) -> bool:
        """One read-check-write round; True if we hold the lease afterwards."""
        attempt_start = time.monotonic()
        try:
            lease = self.client.get(LEASES, self.lease_name, self.namespace)
        except NotFound:
            body = {
                "metadata": {"name": self.lease_name, "namespace": self.namespace},
                "spec": self._spec(0, _now_micro()),
            }
            try:
                created = self.client.create(LEASES, body, self.namespace)
            except (AlreadyExists, Conflict):
                return False
            except Exception as exc:
                log.warning("%s: creating lease failed: %s", self.identity, exc)
                return False
            self._observe(created, attempt_start)
            self._last_renew = attempt_start
            return True
        except Exception as exc:
            log.warning("%s: reading lease failed: %s", self.identity, exc)
            return False

        spec = lease.get("spec") or {}
        self._observe(lease, time.monotonic())
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self.identity:
            duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
            if time.monotonic() < self._observed_time + duration:
                return False  # held by someone else and not expired (by our clock)

        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            acquire_time = spec.get("acquireTime") or _now_micro()
        else:  # a takeover (expired or released holder)
            acquire_time = _now_micro()
            transitions += 1
        lease["spec"] = {**spec, **self._spec(transitions, acquire_time)}
        try:
            updated = self.client.update(LEASES, lease)
        except Conflict:
            return False
        except Exception as exc:
            log.warning("%s: updating lease failed: %s", self.identity, exc)
            return False
        self._observe(updated, attempt_start)
        self._last_renew = attempt_start
        return True

    def _observe(self, lease: dict, when: float) -> None:
        spec = dict(lease.get("spec") or {})
        if spec != self._observed_spec:
            self._observed_spec = spec
            self._observed_time = when
        self._observed_rv = (lease.get("metadata") or {}).get("resourceVersion")
        holder = spec.get("holderIdentity") or ""
        if holder != self.leader:
            self.leader = holder
            if holder:
                _safe_call(self.on_new_leader, holder)

    def _release(self) -> None:
        """Clear holderIdentity (client-go's release): the next candidate need not wait."""
        try:
            lease = self.client.get(LEASES, self.lease_name, self.namespace)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            lease["spec"] = {
                **spec,
                "holderIdentity": None,
                "leaseDurationSeconds": 1,
                "renewTime": _now_micro(),
            }
            self.client.update(LEASES, lease)
            log.info("%s: released lease %s/%s", self.identity, self.namespace, self.lease_name)
        except Exception as exc:
            log.warning("%s: releasing lease failed: %s", self.identity, exc)
