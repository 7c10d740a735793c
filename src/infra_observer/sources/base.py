"""What every source offers the application."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, NamedTuple, Protocol, TypeVar

import structlog

from infra_observer.events.model import Event
from infra_observer.metrics import Metrics
from infra_observer.observations import Diagnosis, Level
from infra_observer.sources.skips import Skip

log = structlog.get_logger(__name__)

StateT = TypeVar("StateT")

__all__ = [
    "Diagnosis",
    "Level",
    "Problem",
    "Source",
    "Translation",
    "one_line",
    "report_input_error",
]


class Problem(NamedTuple):
    """Something wrong in an object that did not prevent its event; `kind` labels the metric."""

    kind: str
    detail: str


# Not frozen: one is built per observed change, and a frozen dataclass spends several times
# as long setting its fields.
@dataclass(slots=True)
class Translation(Generic[StateT]):
    """What one observation of an object becomes: the one result type of every source.

    Each source's pure step has the shape
    `translate(observation, previous: StateT | None, *, ...) -> Translation[StateT]`:
    the object as observed, what was remembered of it (None: never seen), and the source's
    settings as keywords.
    """

    key: str
    """The object's identity: the pod uid, the container id, the task ARN."""
    state: StateT | None
    """What to remember of the object from now on; None: forget it."""
    events: list[Event] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    """What was wrong but did not prevent the events (bad labels, bad timestamps)."""
    skipped: Skip | None = None
    """Why the object gives no event at all (its flow-run id is empty or not a UUID)."""
    unchanged: str | None = None
    """Why an observation of a selected object gives no event: nothing new ("repeated",
    "duplicate", "stale"), or the object is not one the source follows ("not_selected")."""
    diagnosis_changed: bool = False
    """The diagnosis category differs from the one known before; an object seen for the
    first time counts when it has one."""


def report_input_error(
    metrics: Metrics, *, source: str, kind: str, detail: str, **context: object
) -> None:
    """Log and count one malformed input that the source survived."""
    metrics.input_errors.labels(source=source, kind=kind).inc()
    log.warning("input_error", source=source, kind=kind, detail=detail, **context)


class Source(Protocol):
    """A watcher: its `run` loops forever (reconnecting by design) until it is cancelled."""

    name: str

    @property
    def ready(self) -> bool:
        """True once the initial state was listed and processed and changes are followed."""
        ...

    async def run(self) -> None: ...

    async def check(self) -> str:
        """Reach the peer once; return what was reached, or raise an InfraObserverError
        whose message says what is wrong and how to fix it (secrets redacted)."""
        ...


_SUMMARY_LIMIT = 300


def one_line(text: str) -> str:
    """`text` on one line (runs of white space become one space), cut to a readable length."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _SUMMARY_LIMIT else f"{flat[: _SUMMARY_LIMIT - 1]}…"
