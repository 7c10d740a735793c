"""What one observation of a container becomes: the Docker source's pure state machine.

`translate(observation, previous, *, worker_name)` takes one of three observations (an event
of the stream with the container as inspected after it, a container found by a listing, a
known container missing from a listing) and what was remembered of the container, and
returns a `Translation[ContainerState]` keyed by the container id. No I/O and no clock: the
caller inspects the container when `needs_inspect` says so and passes the daemon's own time
for observations that carry none. Docker's JSON is read in `wire.py`.

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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

from infra_observer.events.ids import container_event_id
from infra_observer.events.model import Event
from infra_observer.events.related import FlowRunRefs, refs_from_labels
from infra_observer.sources.base import Problem, Translation
from infra_observer.sources.docker.catalog import ContainerStatus, docker_container_event
from infra_observer.sources.docker.wire import DockerEvent, Inspected, to_datetime
from infra_observer.sources.skips import flow_run_skip

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

_UNCHANGED = "repeated"
"""Why an observation gives no event: the status it shows was already reported, or its
action never changes the status."""


# --- Observations -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamedEvent:
    """An event of the stream and the container as inspected after it.

    `inspected` is None when `needs_inspect` says the event needs none, or when the
    container was already gone (404) by the time it was inspected.
    """

    event: DockerEvent
    inspected: Inspected | None


@dataclass(frozen=True, slots=True)
class ListedContainer:
    """A container found by a listing (after each (re)connection), in its inspected state."""

    inspected: Inspected
    observed: int
    """The daemon's time of the listing (ns): it dates what Docker does not date itself (a
    pause, a removal); of those, only an unpause missed while disconnected has it in its id."""


@dataclass(frozen=True, slots=True)
class MissingContainer:
    """A known container missing from a new listing: it was removed while disconnected."""

    container_id: str
    observed: int
    """The daemon's time of the listing (ns), which dates the removal."""


Observation = StreamedEvent | ListedContainer | MissingContainer


@dataclass(frozen=True, slots=True)
class ContainerState:
    """What is remembered of one container: who it is and the last status reported."""

    container_id: str
    name: str | None
    labels: Mapping[str, str]
    status: ContainerStatus
    marks: Mapping[str, str]
    """The timestamps that went into the last event's id."""


class _Status(NamedTuple):
    status: ContainerStatus
    marks: dict[str, str]
    occurred: int


def needs_inspect(event: DockerEvent) -> bool:
    """Whether translating this event needs the container's inspected state."""
    return _ACTIONS.get(event.action) not in (None, "removed")


# --- Translation --------------------------------------------------------------------------


def translate(
    observation: Observation, previous: ContainerState | None, *, worker_name: str
) -> Translation[ContainerState]:
    """The new state of the observed container and its events (key: the container id).

    `worker_name` names the worker related resource when the container's labels name none.
    """
    if isinstance(observation, StreamedEvent):
        return _streamed(
            observation.event, observation.inspected, previous=previous, worker_name=worker_name
        )
    if isinstance(observation, ListedContainer):
        return _listed(
            observation.inspected, previous, worker_name=worker_name, observed=observation.observed
        )
    if previous is None:
        return Translation(observation.container_id, None, unchanged=_UNCHANGED)
    return _removed(
        previous, previous=previous, occurred=observation.observed, worker_name=worker_name
    )


def _streamed(
    event: DockerEvent,
    inspected: Inspected | None,
    *,
    previous: ContainerState | None,
    worker_name: str,
) -> Translation[ContainerState]:
    meaning = _ACTIONS.get(event.action)
    if meaning is None:
        return Translation(event.container_id, previous, unchanged=_UNCHANGED)
    if meaning == "removed":
        return _removed(
            ContainerState(event.container_id, event.name, event.attributes, "removing", {}),
            previous=previous,
            occurred=event.time_nano,
            worker_name=worker_name,
        )
    new = _status_for(meaning, event=event, inspected=inspected, previous=previous)
    if new is None:
        return Translation(event.container_id, previous, unchanged=_UNCHANGED)
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
        run = _started_mark(inspected, previous, at=at)
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


def _started_mark(inspected: Inspected | None, previous: ContainerState | None, *, at: int) -> str:
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


def _listed(
    inspected: Inspected,
    previous: ContainerState | None,
    *,
    worker_name: str,
    observed: int,
) -> Translation[ContainerState]:
    return _report(
        _listed_status(inspected, previous=previous, observed=observed),
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


def _removed(
    known: ContainerState,
    *,
    previous: ContainerState | None,
    occurred: int,
    worker_name: str,
) -> Translation[ContainerState]:
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
    result.state = None  # gone: forgotten, whatever was reported
    return result


def _report(
    new: _Status,
    *,
    container_id: str,
    name: str | None,
    labels: Mapping[str, str],
    previous: ContainerState | None,
    worker_name: str,
) -> Translation[ContainerState]:
    state = ContainerState(container_id, name, dict(labels), new.status, new.marks)
    if previous is not None and _same(previous, new):
        return Translation(container_id, _keep(previous, state), unchanged=_UNCHANGED)
    refs, label_problems = refs_from_labels(labels)
    if refs.flow_run_id is None:
        # Labels never change on a container: nothing is remembered of it.
        skip = flow_run_skip(labels, keys=_FLOW_RUN_KEYS)
        return Translation(container_id, None, skipped=skip)
    event = _build(new, container_id=container_id, name=name, refs=refs, worker_name=worker_name)
    problems = [Problem("label", p) for p in label_problems]
    return Translation(container_id, state, [event], problems)


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
