"""What the lifecycle needs of Prefect's orchestration and logs API."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from infra_observer.observations import Level

AnswerStatus = Literal["ACCEPT", "REJECT", "ABORT", "WAIT"]


@dataclass(frozen=True, slots=True)
class RunState:
    """A flow run's current state, as the server reports it."""

    type: str | None
    name: str | None


@dataclass(frozen=True, slots=True)
class Answer:
    """The server's orchestration result for one proposed state."""

    status: AnswerStatus
    reason: str | None = None
    delay_seconds: float | None = None
    """With WAIT: how long the server asks to wait before proposing again."""


class FlowRunApi(Protocol):
    async def read_states(self, ids: Sequence[uuid.UUID]) -> Mapping[uuid.UUID, RunState]:
        """The states of the runs that exist among `ids`, read in bulk."""
        ...

    async def propose(
        self, flow_run_id: uuid.UUID, *, type: str, name: str, message: str
    ) -> Answer:
        """Propose a state, never forced; raises a retryable error when the API fails."""
        ...

    async def write_logs(
        self, flow_run_id: uuid.UUID, lines: Sequence[str], *, level: Level, name: str
    ) -> int:
        """Write lines to the run's logs, split to the server's limits; how many were written."""
        ...
