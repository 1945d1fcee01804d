"""How often a workspace may re-create a Machine (or NodeClaim) that went away before it was Ready.

Why: the provisioner deletes a Machine whose Node never registers (its registration TTL) and the
reconciler, seeing a desired Machine missing, creates it again, so a node that can never join
(a broken image, a VNet that drops kubelet's traffic) would cost a GPU VM per TTL forever. So
the workspace counts its re-creations, waits longer before each (exponential backoff), and after
``limit`` of them stops and says so in ResourceReady with the last reason the provisioner gave.

Why an annotation on the Workspace (``kaito.sh/node-launches``): the count must survive a
controller restart and a leader change, and the Machine that carried the reason is gone by the
time it matters. The record is the controller's, written with one merge patch; a person resets
it by deleting the annotation (``kubectl annotate workspace X kaito.sh/node-launches-``). A value
that does not parse counts as no record (the controller never crashes on it); it is rewritten
at the next launch.

Pure: the reconciler hands in the record, the clock and the missing names; this module decides.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

ANNOTATION = "kaito.sh/node-launches"
MAX_REASON = 512  # the annotation stays small; the condition's message has room for it


@dataclass
class LaunchRecord:
    """Per machine name: how many times it was created; the last failure seen; when a pending
    re-creation was first noticed (the backoff counts from there)."""

    launches: dict[str, int] = field(default_factory=dict)
    reason: str = ""
    noticed: float | None = None

    @property
    def failures(self) -> int:
        """Re-creations so far: every creation of a name after its first."""
        return sum(max(0, n - 1) for n in self.launches.values())

    def note_reason(self, reason: str) -> bool:
        """Keep the latest failure a Machine reported; True if that changed the record."""
        reason = reason[:MAX_REASON]
        if not reason or reason == self.reason:
            return False
        self.reason = reason
        return True

    def launched(self, name: str) -> None:
        self.launches[name] = self.launches.get(name, 0) + 1
        self.noticed = None

    def reset(self, names: list[str]) -> bool:
        """All machines are Ready: past failures are forgiven (the limit is of failures in a row)."""
        if not self.failures and self.noticed is None:
            return False
        self.launches = dict.fromkeys(names, 1)
        self.noticed = None
        return True

    def dump(self) -> str:
        body: dict = {"launches": dict(sorted(self.launches.items()))}
        if self.reason:
            body["reason"] = self.reason
        if self.noticed is not None:
            body["noticed"] = round(self.noticed, 3)
        return json.dumps(body, sort_keys=True, separators=(",", ":"))


def parse(annotations: dict[str, str] | None) -> LaunchRecord:
    """The record in ``annotations``; an empty one when absent or not ours to read."""
    raw = (annotations or {}).get(ANNOTATION)
    try:
        body = json.loads(raw) if raw else {}
        launches = {str(k): int(v) for k, v in dict(body.get("launches") or {}).items() if int(v) >= 0}
        noticed = body.get("noticed")
        return LaunchRecord(launches=launches, reason=str(body.get("reason") or "")[:MAX_REASON],
                            noticed=float(noticed) if isinstance(noticed, int | float) else None)
    except (ValueError, TypeError, AttributeError, OverflowError):
        return LaunchRecord()


@dataclass(frozen=True)
class Policy:
    """``limit`` re-creations in a row at most; the n-th waits ``base * 2**(n-1)``, at most ``cap``."""

    limit: int = 3
    backoff_seconds: float = 60.0
    backoff_max_seconds: float = 900.0

    def delay(self, failure: int) -> float:
        return min(self.backoff_max_seconds, self.backoff_seconds * 2 ** max(0, failure - 1))


@dataclass(frozen=True)
class Decision:
    """What to do about the missing Machines this pass."""

    create: list[str]  # create these now
    wait_seconds: float | None = None  # re-creations held back this long
    gave_up: str | None = None  # the limit is reached: the message for ResourceReady


def decide(record: LaunchRecord, missing: list[str], now: float, policy: Policy) -> Decision:
    """First launches go at once; re-creations wait out the backoff, and stop past the limit.

    Mutates ``record.noticed`` when a re-creation is first seen to be needed (the caller stores it).
    """
    first = [n for n in missing if record.launches.get(n, 0) == 0]
    again = [n for n in missing if record.launches.get(n, 0) > 0]
    if not again:
        return Decision(create=first)
    failure = record.failures + 1  # the one re-creating `again[0]` would be
    if failure > policy.limit:
        why = record.reason or f"machine {again[0]} went away before it was ready"
        return Decision(create=first, gave_up=(
            f"gave up on {', '.join(again)} after {record.failures} re-creation(s) of machines that "
            f"never became ready (limit {policy.limit}); last failure: {why}. Delete the annotation "
            f"{ANNOTATION} to try again"))
    if record.noticed is None:
        record.noticed = now
    left = record.noticed + policy.delay(failure) - now
    if left > 0:
        return Decision(create=first, wait_seconds=left)
    return Decision(create=first + again[:1])  # one at a time: each counts, and may reach the limit
