"""Which proposals a flow run's current state admits: always propose, never force.

The server's orchestration rules have the last word; these rules only spare it proposals
that cannot be right, so that a run that moved on is never pulled back.
"""

from __future__ import annotations

from typing import Final, Literal

ProposalKind = Literal["pending", "crashed"]

INFRASTRUCTURE_PENDING: Final = "InfrastructurePending"
"""The name of the Pending state proposed while the infrastructure is not running yet."""

FINAL_STATE_TYPES: Final = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})

# A run that runs, or that a person or the engine paused or is cancelling, is past the
# point where its infrastructure being pending says anything new.
_NOT_PENDING: Final = FINAL_STATE_TYPES | {"RUNNING", "PAUSED", "CANCELLING"}
# A scheduled run has not been handed to infrastructure yet: what crashed is something else.
_NOT_CRASHED: Final = FINAL_STATE_TYPES | {"SCHEDULED", "PAUSED", "CANCELLING"}


def admits(kind: ProposalKind, *, state_type: str | None, state_name: str | None) -> bool:
    """True when a run in state (`state_type`, `state_name`) may be proposed `kind`.

    A run without a state admits both: the server decides.
    """
    if state_type is None:
        return True
    if kind == "pending":
        if state_type == "PENDING" and state_name == INFRASTRUCTURE_PENDING:
            return False
        return state_type not in _NOT_PENDING
    return state_type not in _NOT_CRASHED
