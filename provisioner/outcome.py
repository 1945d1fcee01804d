"""What one stage of the Machine lifecycle did, as a value the reconciler sequences.

Why a value and not an exception: a stage that deleted its Machine used to raise a control-flow
exception through two frames so the status write would be skipped. An outcome says the same in the
return type, and the reconciler reads as a table: advanced -> the next stage; wait -> write the
status, look again after ``requeue_after`` (None: when an event comes); deleted -> write nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Outcome:
    state: Literal["advanced", "wait", "deleted"]
    requeue_after: float | None = None

    @property
    def advanced(self) -> bool:
        return self.state == "advanced"


ADVANCED = Outcome("advanced")
DELETED = Outcome("deleted")


def wait(requeue_after: float | None = None) -> Outcome:
    """Stop here for this pass; look again after ``requeue_after`` seconds, or on the next event."""
    return Outcome("wait", requeue_after)
