"""Docker's JSON, read as far as the translation needs: event lines, inspected containers, times.

Pure: the raw objects of the Engine API (dicts) in, small frozen records out, or an
`InputError` that says what is malformed. Times stay in nanoseconds since the epoch, the
daemon's own precision and what an event's `timeNano` holds: datetime would round them to
microseconds and make distinct instants equal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from infra_observer.errors import InputError
from infra_observer.sources.docker.catalog import CONTAINER_STATUSES, ContainerStatus

_TIMESTAMP = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$", re.IGNORECASE
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_T = TypeVar("_T")


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
    exit_code: int | None = None
    """`State.ExitCode`: the last exit's code (0 while it never exited); None: unreadable."""
    oom_killed: bool = False
    """`State.OOMKilled`: the kernel killed a process of the container for lack of memory."""
    tty: bool = False
    """`Config.Tty`: its logs are one raw stream, not Docker's multiplexed frames."""
    problems: tuple[str, ...] = ()
    """Fields left out because they were malformed, each saying what was wrong."""


def parse_event_line(line: str | bytes) -> DockerEvent | None:
    """One line of the events stream; None for events that are not about a container."""
    try:
        raw = json.loads(line)
    except ValueError as exc:
        raise InputError(f"events stream line is not JSON: {exc}") from exc
    return parse_event(raw)


def parse_event(raw: Any) -> DockerEvent | None:
    """One decoded event of the stream; None for events that are not about a container."""
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
    """`GET /containers/{id}/json`'s answer, as far as the translation reads it."""
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
    problems: list[str] = []
    return Inspected(
        container_id=raw["Id"],
        name=(_str_or_none(raw.get("Name")) or "").lstrip("/") or None,
        labels={str(k): str(v) for k, v in (labels or {}).items()},
        status=status,
        created=parse_timestamp(raw.get("Created")),
        started_at=parse_timestamp(state.get("StartedAt")),
        finished_at=parse_timestamp(state.get("FinishedAt")),
        exit_code=_field(state, "ExitCode", kind=int, problems=problems),
        oom_killed=_field(state, "OOMKilled", kind=bool, problems=problems) or False,
        tty=_field(config, "Tty", kind=bool, problems=problems, where="Config") or False,
        problems=tuple(problems),
    )


def _field(
    parent: object, key: str, *, kind: type[_T], problems: list[str], where: str = "State"
) -> _T | None:
    """`parent[key]` when it is a `kind`; a value of another type is a problem, left out."""
    if not isinstance(parent, dict):
        return None
    value = parent.get(key)
    if value is None:
        return None
    # A bool is an int to Python, never to Docker.
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    expected = "an integer" if kind is int else "a boolean"
    problems.append(f"{where}.{key} is {value!r}, not {expected}")
    return None


def event_exit_code(event: DockerEvent) -> int | None:
    """The exit code a `die` event carries (its `exitCode` attribute); None when it has none."""
    value = event.attributes.get("exitCode")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise InputError(f"{event.action} event has exitCode {value!r}, not an integer") from exc


def daemon_name(info: Mapping[str, Any]) -> str | None:
    """The daemon's host name, from `GET /info`; None when it gives none."""
    return _str_or_none(info.get("Name"))


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_timestamp(value: object) -> int | None:
    """Docker's RFC 3339 time with nanoseconds, in ns since epoch; None for Go's zero time."""
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
    """Nanoseconds since the epoch as an aware datetime (to the microsecond)."""
    try:
        return _EPOCH + timedelta(microseconds=nanos // 1000)
    except OverflowError as exc:
        raise InputError(f"timestamp of {nanos} ns since the epoch is out of range") from exc
