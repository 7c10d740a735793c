"""Pure translation of "ECS Task State Change" messages into events.

`parse_message` turns an SQS message body (the EventBridge envelope) into a
`TaskStateChange`, or raises `InputError` saying what is wrong with it. `translate` decides,
from the task's tags and the last `detail.version` delivered for the task, whether the change
becomes an event. No I/O here: the source (`source.py`) supplies tags and state.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from infra_observer.errors import InputError
from infra_observer.events.catalog import (
    ECS_TASK_STATUSES,
    EcsTaskStatus,
    ecs_task_event,
    refs_from_labels,
)
from infra_observer.events.model import Event, utc
from infra_observer.sources.base import Problem, Translation
from infra_observer.sources.ecs.diagnosis import ContainerExit, StopDetail, diagnose
from infra_observer.sources.skips import flow_run_skip

DETAIL_TYPE = "ECS Task State Change"
EVENT_SOURCE = "aws.ecs"
FLOW_RUN_TAG = "prefect.io/flow-run-id"


_NO_STOP = StopDetail()


@dataclass(frozen=True, slots=True)
class TaskStateChange:
    """One "ECS Task State Change" as far as this project needs it."""

    event_id: uuid.UUID
    occurred: datetime
    task_arn: str
    cluster_arn: str | None
    task_definition_arn: str | None
    status: EcsTaskStatus
    version: int | None
    """`detail.version`: grows with every change of the task; None when absent."""
    stop: StopDetail = _NO_STOP
    """What the diagnosis reads: stop code and reason, the containers' exits."""
    problems: tuple[str, ...] = ()
    """Fields of `detail` that the diagnosis could not read (the change is kept)."""


def parse_message(body: str | bytes) -> TaskStateChange:
    """Read an SQS message body; raise `InputError` naming what is missing or wrong."""
    try:
        envelope = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"message body is not JSON: {exc}") from exc
    if not isinstance(envelope, dict):
        raise InputError(f"message body is a JSON {type(envelope).__name__}, not an object")
    _require_ecs_task_change(envelope)
    detail = envelope.get("detail")
    if not isinstance(detail, dict):
        raise InputError("envelope has no `detail` object")
    problems: list[str] = []
    stop = _stop_detail(detail, problems)
    return TaskStateChange(
        event_id=_event_id(envelope.get("id")),
        occurred=_timestamp(envelope.get("time")),
        task_arn=_required_text(detail, "taskArn"),
        cluster_arn=_optional_text(detail, "clusterArn"),
        task_definition_arn=_optional_text(detail, "taskDefinitionArn"),
        status=_status(detail.get("lastStatus")),
        version=_version(detail.get("version")),
        stop=stop,
        problems=tuple(problems),
    )


def _require_ecs_task_change(envelope: Mapping[str, Any]) -> None:
    detail_type, source = envelope.get("detail-type"), envelope.get("source")
    if detail_type != DETAIL_TYPE or source != EVENT_SOURCE:
        raise InputError(
            f"not an ECS task state change: source={source!r}, detail-type={detail_type!r} "
            f"(expected {EVENT_SOURCE!r}, {DETAIL_TYPE!r})"
        )


def _event_id(value: object) -> uuid.UUID:
    if not isinstance(value, str):
        raise InputError(f"envelope `id` is {value!r}, not a UUID string")
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise InputError(f"envelope `id` {value!r} is not a UUID") from exc


def _timestamp(value: object) -> datetime:
    if not isinstance(value, str):
        raise InputError(f"envelope `time` is {value!r}, not an RFC 3339 timestamp")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InputError(f"envelope `time` {value!r} is not an RFC 3339 timestamp") from exc
    if moment.tzinfo is None:
        raise InputError(f"envelope `time` {value!r} has no time zone")
    return utc(moment)


def _required_text(detail: Mapping[str, Any], key: str) -> str:
    value = detail.get(key)
    if not isinstance(value, str) or not value:
        raise InputError(f"detail.{key} is {value!r}, not a non-empty string")
    return value


def _optional_text(detail: Mapping[str, Any], key: str) -> str | None:
    value = detail.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InputError(f"detail.{key} is {value!r}, not a string")
    return value


def _status(value: object) -> EcsTaskStatus:
    status = value.lower() if isinstance(value, str) else None
    if status not in ECS_TASK_STATUSES:
        raise InputError(
            f"detail.lastStatus is {value!r}, not one of "
            f"{', '.join(s.upper() for s in ECS_TASK_STATUSES)}"
        )
    return status


def _version(value: object) -> int | None:
    if value is None:
        return None
    # bool is an int in Python, but never a version.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InputError(f"detail.version is {value!r}, not a non-negative integer")
    return value


def _stop_detail(detail: Mapping[str, Any], problems: list[str]) -> StopDetail:
    """The diagnosis's fields; one of an unexpected type is left out and reported, since
    the status change itself is still good."""
    containers = detail.get("containers")
    if containers is not None and not isinstance(containers, list):
        problems.append(f"detail.containers is {containers!r}, not a list")
        containers = None
    return StopDetail(
        stop_code=_lenient_text(detail, "stopCode", problems=problems),
        stopped_reason=_lenient_text(detail, "stoppedReason", problems=problems),
        containers=tuple(
            _container_exit(index, container, problems=problems)
            for index, container in enumerate(containers or ())
        ),
    )


def _container_exit(index: int, container: object, *, problems: list[str]) -> ContainerExit:
    if not isinstance(container, dict):
        problems.append(f"detail.containers[{index}] is {container!r}, not an object")
        return ContainerExit()
    code = container.get("exitCode")
    if code is not None and type(code) is not int:  # `type`: True is no exit code
        problems.append(f"detail.containers[{index}].exitCode is {code!r}, not an integer")
        code = None
    where = f"containers[{index}]."
    return ContainerExit(
        name=_lenient_text(container, "name", problems=problems, where=where),
        exit_code=code,
        reason=_lenient_text(container, "reason", problems=problems, where=where),
    )


def _lenient_text(
    parent: Mapping[str, Any], key: str, *, problems: list[str], where: str = ""
) -> str | None:
    value = parent.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        problems.append(f"detail.{where}{key} is {value!r}, not a string")
        return None
    return value


# --- tags ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TagFilter:
    """`key` (the tag is present) or `key=value` (it has that value)."""

    key: str
    value: str | None = None

    def matches(self, tags: Mapping[str, str]) -> bool:
        if self.key not in tags:
            return False
        return self.value is None or tags[self.key] == self.value


def parse_tag_filters(filters: Iterable[str]) -> tuple[TagFilter, ...]:
    """Read `key` / `key=value` filters; raise `ValueError` for an empty key."""
    parsed = []
    for text in filters:
        key, sep, value = text.partition("=")
        if not key.strip():
            raise ValueError(f"tag filter {text!r} has no key; write `key` or `key=value`")
        parsed.append(TagFilter(key.strip(), value.strip() if sep else None))
    return tuple(parsed)


# --- the translation ----------------------------------------------------------------------


NOT_SELECTED = "not_selected"
"""The task has no `prefect.io/flow-run-id` tag, or misses a configured tag filter."""
DUPLICATE = "duplicate"
"""Same `detail.version` as the last change delivered for the task: already reported."""
STALE = "stale"
"""Older `detail.version` than the last delivered: reporting it would show an old status as
the latest one."""


def translate(
    change: TaskStateChange,
    previous: int | None,
    *,
    tags: Mapping[str, str],
    tag_filters: Sequence[TagFilter] = (),
) -> Translation[int]:
    """What `change` becomes, given the last delivered version of its task (`previous`) and
    the task's tags.

    The state is the version to remember once the event is delivered. A selected task whose
    flow-run tag is empty or not a UUID gives no event (`skipped`): no event without a flow
    run (the reference page makes it always present).
    """
    key = change.task_arn
    if FLOW_RUN_TAG not in tags or not all(f.matches(tags) for f in tag_filters):
        return Translation(key, previous, unchanged=NOT_SELECTED)
    if change.version is not None and previous is not None:
        if change.version == previous:
            return Translation(key, previous, unchanged=DUPLICATE)
        if change.version < previous:
            return Translation(key, previous, unchanged=STALE)
    refs, tag_problems = refs_from_labels(tags)
    if refs.flow_run_id is None:
        return Translation(key, previous, skipped=flow_run_skip(tags, keys=(FLOW_RUN_TAG,)))
    event: Event = ecs_task_event(
        status=change.status,
        task_arn=change.task_arn,
        cluster_arn=change.cluster_arn,
        task_definition_arn=change.task_definition_arn,
        refs=refs,
        occurred=change.occurred,
        event_id=change.event_id,
        diagnosis=diagnose(change.stop),
    )
    problems = [Problem("tag", p) for p in tag_problems]
    problems += [Problem("detail", p) for p in change.problems]
    state = previous if change.version is None else change.version
    return Translation(key, state, events=[event], problems=problems)
