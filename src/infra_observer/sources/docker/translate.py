"""Pure translation: a Docker event and/or an inspected container, plus what was known of the
container, into a new state and events.

No I/O and no clock: the caller inspects the container when `needs_inspect` says so and
passes the daemon's own time for observations that carry none. Inputs are the raw JSON
objects of the Engine API (dicts).

Ids: `container_event_id` over the container id, the status and the Docker timestamps that
identify that status (`started_at` for running and paused, `finished_at` for exited, dead
and restarting; none for created and removing, which happen once per container). The
timestamps come from `GET /containers/{id}/json`, which the stream and the resynchronising
listing both read, so both paths, any replica and a restarted daemon produce the same id.
Docker keeps no time of a pause, so a pause is told apart from an earlier one of the same
run by the unpause before it (`unpaused_at`), when that unpause was seen.

A container whose flow-run label is empty or not a UUID gives no event (`skipped`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple

from infra_observer.errors import InputError
from infra_observer.events.ids import container_event_id
from infra_observer.events.model import Event
from infra_observer.events.related import FlowRunRefs, refs_from_labels
from infra_observer.sources.docker.catalog import (
    CONTAINER_STATUSES,
    ContainerStatus,
    docker_container_event,
)
from infra_observer.sources.skips import Skip, flow_run_skip

FLOW_RUN_LABELS = ("io.prefect.flow-run-id", "prefect.io/flow-run-id")
"""Prefect's Docker worker writes the reverse-DNS form; the other one is accepted too."""
# In the order `refs_from_labels` reads them: the first one set is the flow-run id.
_FLOW_RUN_KEYS = ("prefect.io/flow-run-id", "io.prefect.flow-run-id")

# What an action means. Actions missing here (attach, rename, exec_*, health_status, ...)
# never change the status and produce nothing.
Meaning = Literal["created", "started", "paused", "unpaused", "exited", "signalled", "removed"]
_ACTIONS: dict[str, Meaning] = {
    "create": "created",
    "start": "started",
    # Docker sends `restart` after the restarted container is up again (right after its
    # `start`): it means running, and the exit before it came as `die`.
    "restart": "started",
    "pause": "paused",
    "unpause": "unpaused",
    "die": "exited",
    "stop": "exited",
    # A signal or an OOM kill may or may not end the process: only the inspected state
    # tells; when it did, `die` follows and the exit is reported once.
    "kill": "signalled",
    "oom": "signalled",
    "destroy": "removed",
}

_EXIT_STATUSES: frozenset[ContainerStatus] = frozenset({"exited", "dead", "restarting"})

_TIMESTAMP = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$", re.IGNORECASE
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- Parsed inputs ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DockerEvent:
    """One container event of `GET /events`."""

    container_id: str
    action: str
    """The action without its suffix: `exec_start: sh -c x` is `exec_start`."""
    detail: str | None
    name: str | None
    attributes: Mapping[str, str]
    """The actor's attributes: the container's labels, plus `name`, `image`, `exitCode`..."""
    time_nano: int

    @property
    def key(self) -> tuple[str, str, int, str | None]:
        """Identifies one daemon event (to drop the copy a second stream delivers)."""
        return (self.container_id, self.action, self.time_nano, self.detail)


@dataclass(frozen=True, slots=True)
class Inspected:
    """The parts of `GET /containers/{id}/json` that matter here; times in ns since epoch."""

    container_id: str
    name: str | None
    labels: Mapping[str, str]
    status: ContainerStatus
    created: int | None
    started_at: int | None
    finished_at: int | None


def parse_event_line(line: str | bytes) -> DockerEvent | None:
    """One line of the events stream; None for events that are not about a container."""
    try:
        raw = json.loads(line)
    except ValueError as exc:
        raise InputError(f"events stream line is not JSON: {exc}") from exc
    return parse_event(raw)


def parse_event(raw: Any) -> DockerEvent | None:
    if not isinstance(raw, dict):
        raise InputError(f"event is a {type(raw).__name__}, not an object")
    if raw.get("Type", "container") != "container":
        return None
    action = raw.get("Action") or raw.get("status")
    actor = raw.get("Actor")
    if not isinstance(action, str) or not action:
        raise InputError("event has no Action")
    if not isinstance(actor, dict) or not isinstance(actor.get("ID"), str) or not actor["ID"]:
        raise InputError(f"{action} event has no Actor.ID")
    attributes = actor.get("Attributes") or {}
    if not isinstance(attributes, dict):
        raise InputError(f"{action} event has Actor.Attributes that is not an object")
    base, _, detail = action.partition(": ")
    return DockerEvent(
        container_id=actor["ID"],
        action=base,
        detail=detail or None,
        name=_str_or_none(attributes.get("name")),
        attributes={str(k): str(v) for k, v in attributes.items()},
        time_nano=_event_time(raw, action),
    )


def _event_time(raw: Mapping[str, Any], action: str) -> int:
    time_nano = raw.get("timeNano")
    seconds = raw.get("time")
    if isinstance(time_nano, int) and time_nano > 0:
        nanos = time_nano
    elif isinstance(seconds, int) and seconds > 0:
        nanos = seconds * 1_000_000_000
    else:
        raise InputError(f"{action} event has neither timeNano nor time")
    to_datetime(nanos)  # out of datetime's range: refused here, not when the event is built
    return nanos


def parse_inspect(raw: Any) -> Inspected:
    if not isinstance(raw, dict) or not isinstance(raw.get("Id"), str) or not raw["Id"]:
        raise InputError("inspected container has no Id")
    state = raw.get("State")
    if not isinstance(state, dict):
        raise InputError(f"container {raw['Id'][:12]} has no State")
    status = state.get("Status")
    if status not in CONTAINER_STATUSES:
        raise InputError(f"container {raw['Id'][:12]} has unknown State.Status {status!r}")
    config = raw.get("Config") or {}
    labels = config.get("Labels") if isinstance(config, dict) else None
    if labels is not None and not isinstance(labels, dict):
        raise InputError(f"container {raw['Id'][:12]} has Config.Labels that is not an object")
    return Inspected(
        container_id=raw["Id"],
        name=(_str_or_none(raw.get("Name")) or "").lstrip("/") or None,
        labels={str(k): str(v) for k, v in (labels or {}).items()},
        status=status,
        created=parse_timestamp(raw.get("Created")),
        started_at=parse_timestamp(state.get("StartedAt")),
        finished_at=parse_timestamp(state.get("FinishedAt")),
    )


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_timestamp(value: object) -> int | None:
    """Docker's RFC 3339 time with nanoseconds, in ns since epoch; None for Go's zero time.

    Kept in nanoseconds because that is the daemon's precision and what `timeNano` holds:
    datetime would round to microseconds and make distinct instants equal.
    """
    if not isinstance(value, str) or not value:
        return None
    match = _TIMESTAMP.match(value)
    if match is None:
        raise InputError(f"timestamp {value!r} is not RFC 3339")
    whole, fraction, zone = match.groups()
    moment = datetime.fromisoformat(whole + ("+00:00" if zone.upper() == "Z" else zone))
    if moment.year <= 1:
        return None
    seconds = (moment - _EPOCH) // timedelta(seconds=1)
    return seconds * 1_000_000_000 + int((fraction or "").ljust(9, "0"))


def to_datetime(nanos: int) -> datetime:
    try:
        return _EPOCH + timedelta(microseconds=nanos // 1000)
    except OverflowError as exc:
        raise InputError(f"timestamp of {nanos} ns since the epoch is out of range") from exc


def to_nanos(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


# --- Selection ----------------------------------------------------------------------------


def is_selected(labels: Mapping[str, str], *, label_filters: Sequence[str]) -> bool:
    """A flow-run label in either form, and every extra `key` or `key=value` filter.

    Its presence selects, as the daemon's filter does: an unusable value is then skipped
    (and reported) by the translation, not silently passed over here.
    """
    if not any(key in labels for key in FLOW_RUN_LABELS):
        return False
    for spec in label_filters:
        key, sep, value = spec.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def needs_inspect(event: DockerEvent) -> bool:
    """Whether translating this event needs the container's inspected state."""
    return _ACTIONS.get(event.action) not in (None, "removed")


# --- State and outcome --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContainerState:
    """What is remembered of one container: who it is and the last status reported."""

    container_id: str
    name: str | None
    labels: Mapping[str, str]
    status: ContainerStatus
    marks: Mapping[str, str]
    """The timestamps that went into the last event's id."""


class Problem(NamedTuple):
    """Something wrong in a container that did not prevent its event; `kind` labels the metric."""

    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class Translation:
    """The outcome for one container: its new state (None: forget it) and its events."""

    container_id: str
    state: ContainerState | None
    events: list[Event] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    skipped: Skip | None = None
    """Why the container gives no event at all (its flow-run id is empty or not a UUID)."""


class _Status(NamedTuple):
    status: ContainerStatus
    marks: dict[str, str]
    occurred: int


# --- Translation --------------------------------------------------------------------------


def translate_event(
    event: DockerEvent,
    *,
    inspected: Inspected | None,
    previous: ContainerState | None,
    worker_name: str,
) -> Translation:
    """One event of the stream; `inspected` is None when the container is already gone."""
    meaning = _ACTIONS.get(event.action)
    if meaning is None:
        return Translation(event.container_id, previous)
    if meaning == "removed":
        return _removed(
            ContainerState(event.container_id, event.name, event.attributes, "removing", {}),
            previous=previous,
            occurred=event.time_nano,
            worker_name=worker_name,
        )
    new = _status_for(meaning, event=event, inspected=inspected, previous=previous)
    if new is None:
        return Translation(event.container_id, previous)
    if inspected is not None:
        name, labels = inspected.name, inspected.labels
    else:
        name, labels = event.name or (previous.name if previous else None), event.attributes
    return _report(
        new,
        container_id=event.container_id,
        name=name,
        labels=labels,
        previous=previous,
        worker_name=worker_name,
    )


def _status_for(
    meaning: Meaning,
    *,
    event: DockerEvent,
    inspected: Inspected | None,
    previous: ContainerState | None,
) -> _Status | None:
    at = event.time_nano
    # A timestamp later than the event belongs to a later run (the event is being read
    # late): the event's own time then stands in for it.
    started = _not_after(inspected.started_at if inspected else None, at)
    if meaning == "created":
        created = inspected.created if inspected and inspected.created else at
        return _Status("created", {}, min(created, at))
    if meaning == "started":
        return _Status("running", {"started_at": str(started)}, started)
    if meaning in ("paused", "unpaused"):
        run = _started_mark(inspected, previous, at)
        if meaning == "paused":
            marks = _pause_marks(run, previous)
        else:
            marks = {"started_at": run, "unpaused_at": str(at)}
        return _Status("paused" if meaning == "paused" else "running", marks, at)
    if inspected is None:
        # Gone before it could be inspected: a die still reports the exit, at its own time.
        return _Status("exited", {"finished_at": str(at)}, at) if meaning == "exited" else None
    if meaning == "signalled":
        if inspected.status not in _EXIT_STATUSES:
            return None
        # The exit a signal causes comes after the signal: its time is the one to take.
        finished = inspected.finished_at or at
    else:
        finished = _not_after(inspected.finished_at, at)
    return _Status(_exit_status(inspected), {"finished_at": str(finished)}, finished)


def _not_after(moment: int | None, limit: int) -> int:
    return moment if moment is not None and moment <= limit else limit


def _started_mark(inspected: Inspected | None, previous: ContainerState | None, at: int) -> str:
    if inspected is not None and inspected.started_at is not None:
        return str(_not_after(inspected.started_at, at))
    if previous is not None and "started_at" in previous.marks:
        return previous.marks["started_at"]
    return ""


def _pause_marks(run: str, previous: ContainerState | None) -> dict[str, str]:
    # Docker dates no pause: the run and the unpause before it (if seen) identify it, which
    # the stream and a listing both know, so both give a pause the same id on every start.
    marks = {"started_at": run}
    if previous is not None and previous.marks.get("started_at") == run:
        unpaused = previous.marks.get("unpaused_at")
        if unpaused is not None:
            marks["unpaused_at"] = unpaused
    return marks


def _exit_status(inspected: Inspected) -> ContainerStatus:
    # Already running again after a `die` means a restart policy (or `docker restart`)
    # brought it back: the container is restarting, and its `start` follows.
    if inspected.status in ("restarting", "running", "paused"):
        return "restarting"
    if inspected.status == "dead":
        return "dead"
    return "exited"


def reconcile(
    inspected: Inspected,
    *,
    previous: ContainerState | None,
    worker_name: str,
    observed: int,
) -> Translation:
    """A container found by listing (after each (re)connection), in its inspected state.

    `observed` is the daemon's time of the listing (ns): it dates what Docker does not date
    itself (a pause, a removal); of those, only an unpause missed while disconnected has it
    in its id.
    """
    new = _listed_status(inspected, previous=previous, observed=observed)
    return _report(
        new,
        container_id=inspected.container_id,
        name=inspected.name,
        labels=inspected.labels,
        previous=previous,
        worker_name=worker_name,
    )


def _listed_status(
    inspected: Inspected, *, previous: ContainerState | None, observed: int
) -> _Status:
    status = inspected.status
    started = inspected.started_at or observed
    finished = inspected.finished_at or inspected.started_at or inspected.created or observed
    if status == "created":
        return _Status("created", {}, inspected.created or observed)
    if status == "removing":
        return _Status("removing", {}, observed)
    if status in _EXIT_STATUSES:
        return _Status(status, {"finished_at": str(finished)}, finished)
    marks = {"started_at": str(started)}
    if status == "paused":
        return _Status("paused", _pause_marks(marks["started_at"], previous), observed)
    if (
        previous is not None
        and previous.status == "paused"
        and previous.marks.get("started_at") == marks["started_at"]
    ):
        # Unpaused while the stream was down: the same run, a new running event.
        return _Status("running", marks | {"unpaused_at": str(observed)}, observed)
    return _Status("running", marks, started)


def vanished(previous: ContainerState, *, worker_name: str, observed: int) -> Translation:
    """A known container missing from a new listing: it was removed while disconnected."""
    return _removed(previous, previous=previous, occurred=observed, worker_name=worker_name)


def _removed(
    known: ContainerState,
    *,
    previous: ContainerState | None,
    occurred: int,
    worker_name: str,
) -> Translation:
    # `destroy` comes once the container is gone; `removing` is the page's status for it.
    # What was remembered names the container best; the event's attributes do otherwise.
    who = previous or known
    result = _report(
        _Status("removing", {}, occurred),
        container_id=known.container_id,
        name=who.name,
        labels=who.labels,
        previous=previous,
        worker_name=worker_name,
    )
    return Translation(known.container_id, None, result.events, result.problems, result.skipped)


def _report(
    new: _Status,
    *,
    container_id: str,
    name: str | None,
    labels: Mapping[str, str],
    previous: ContainerState | None,
    worker_name: str,
) -> Translation:
    state = ContainerState(container_id, name, dict(labels), new.status, new.marks)
    if previous is not None and _same(previous, new):
        return Translation(container_id, _keep(previous, state))
    refs, label_problems = refs_from_labels(labels)
    if refs.flow_run_id is None:
        # Labels never change on a container: nothing is remembered of it.
        skip = flow_run_skip(labels, keys=_FLOW_RUN_KEYS)
        return Translation(container_id, None, skipped=skip)
    event = _build(new, container_id=container_id, name=name, refs=refs, worker_name=worker_name)
    return Translation(container_id, state, [event], [Problem("label", p) for p in label_problems])


def _keep(previous: ContainerState, current: ContainerState) -> ContainerState:
    # The status is unchanged; keep its marks (they identify the event sent) but take the
    # latest name and labels.
    return ContainerState(
        previous.container_id, current.name, current.labels, previous.status, previous.marks
    )


def _same(previous: ContainerState, new: _Status) -> bool:
    """Whether `new` was already reported: one event per status of one run, per exit."""
    if previous.status in _EXIT_STATUSES and new.status in _EXIT_STATUSES:
        # A `die` and its `stop` (or `kill`, `oom`) describe one exit: report it once, unless
        # it settled later into a final status (a restart given up, a removal that failed).
        same_exit = previous.marks.get("finished_at") == new.marks.get("finished_at")
        return same_exit and new.status in (previous.status, "restarting")
    if previous.status != new.status:
        return False
    if new.status in ("created", "removing"):
        return True
    return previous.marks.get("started_at") == new.marks.get("started_at")


def _build(
    new: _Status,
    *,
    container_id: str,
    name: str | None,
    refs: FlowRunRefs,
    worker_name: str,
) -> Event:
    return docker_container_event(
        status=new.status,
        container_id=container_id,
        container_name=name,
        refs=refs,
        worker_name=worker_name,
        occurred=to_datetime(new.occurred),
        event_id=container_event_id(
            container_id=container_id, status=new.status, state_marks=new.marks
        ),
    )
