"""What a source observed of a flow run's infrastructure: the seam to the lifecycle layer.

Sources hand `Observation`s to a `FlowRunHandoff` and never wait for what follows
(reading the run, proposing a state, writing its logs): that work has its own queue.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Level = Literal["WARNING", "ERROR"]
Wanted = Literal["pending", "crashed"]


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """What is wrong with a flow run's infrastructure, ready for the flow run's logs.

    Written once per change of `category`, never per change of the summary's text.
    """

    category: str
    """The source's category, as in its `kubernetes.diagnosis` or `ecs.diagnosis` label."""
    level: Level
    summary: str
    """One line, built from the object (container, reason, exit code, the API's message)."""
    resolution: str


CrashLogReader = Callable[[int], Awaitable[Sequence[str]]]
"""Reads the last N lines the crashed infrastructure wrote, oldest first."""


@dataclass(frozen=True, slots=True)
class Observation:
    """One change of a flow run's infrastructure that the lifecycle may act on."""

    flow_run_id: uuid.UUID
    source: str
    """The source's name (`kubernetes`, `docker`, `ecs`), for metrics and log records."""
    wants: Wanted | None = None
    """The state the infrastructure implies, if any: still pending, or crashed."""
    message: str = ""
    """The proposed state's message: what happened, naming the object and the diagnosis."""
    diagnosis: Diagnosis | None = None
    """A new diagnosis category to write to the run's logs (only when it changed)."""
    crash_logs: CrashLogReader | None = None
    """Where to read the infrastructure's last lines when a `crashed` proposal is accepted."""
    past_pending: bool = False
    """The infrastructure is no longer pending: it runs, or ended without crashing the run.
    A `pending` proposal of the run still queued is withdrawn: made now, it would say the
    infrastructure is pending when it is not. Never set with `wants`."""

    @classmethod
    def of_change(
        cls,
        flow_run_id: uuid.UUID,
        source: str,
        *,
        wants: Wanted | None,
        message: str,
        diagnosis: Diagnosis | None,
        crash_logs: CrashLogReader | None,
        past_pending: bool,
    ) -> Observation | None:
        """What one change tells the lifecycle layer; None when it tells nothing (no
        proposal, no diagnosis, not past pending). The crash-log reader goes only with a
        `crashed` proposal."""
        if wants is None and diagnosis is None and not past_pending:
            return None
        return cls(
            flow_run_id,
            source,
            wants=wants,
            message=message,
            diagnosis=diagnosis,
            crash_logs=crash_logs if wants == "crashed" else None,
            past_pending=past_pending,
        )


class FlowRunHandoff(Protocol):
    def observe(self, observation: Observation) -> None:
        """Take the observation without waiting; never raises for a full queue."""
        ...
