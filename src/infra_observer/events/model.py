"""The event as the Prefect events API accepts it, its limits, and its wire form."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
import pydantic

Labels = Mapping[str, str]

RESOURCE_ID = "prefect.resource.id"
RESOURCE_NAME = "prefect.resource.name"
RESOURCE_ROLE = "prefect.resource.role"

# The server's limits (see the events contract). Larger events are dropped by the server
# while it still answers 204, so they are refused here, before sending.
MAX_EVENT_NAME_LENGTH = 1024
MAX_LABELS = 500
MAX_RELATED = 100
MAX_EVENT_BYTES = 1_500_000

_ORJSON_OPTIONS = orjson.OPT_UTC_Z


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One event. Built by a catalog's builders, so its shape is right by construction."""

    occurred: datetime
    event: str
    resource: Labels
    id: UUID
    related: Sequence[Labels] = ()
    payload: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    follows: UUID | None = None

    @property
    def resource_id(self) -> str:
        return self.resource[RESOURCE_ID]

    def with_follows(self, follows: UUID | None) -> Event:
        # Spelled out rather than `dataclasses.replace`, which is slower: once per emitted event.
        return Event(
            self.occurred, self.event, self.resource, self.id, self.related, self.payload, follows
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "occurred": self.occurred,
            "event": self.event,
            "resource": self.resource,
            "related": self.related,
            "payload": self.payload,
            "id": self.id,
            "follows": self.follows,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_wire(), option=_ORJSON_OPTIONS)


def batch_to_json(events: Sequence[Event]) -> bytes:
    return orjson.dumps([event.to_wire() for event in events], option=_ORJSON_OPTIONS)


def utc(moment: datetime) -> datetime:
    """The same instant in UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is UTC:
        return moment  # the usual case (RFC 3339 "Z" times), without a copy
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def resource_labels(resource_id: str, *, name: str | None = None, **extra: str) -> dict[str, str]:
    """The labels of an event's own resource: its id, its name when known, then `extra`."""
    labels = {RESOURCE_ID: resource_id}
    if name:
        labels[RESOURCE_NAME] = name
    labels.update(extra)
    return labels


def limit_problems(event: Event) -> list[str]:
    """What in this event the events API would refuse or silently drop; empty when none."""
    problems: list[str] = []
    if not event.event:
        problems.append("event name is empty")
    elif len(event.event) > MAX_EVENT_NAME_LENGTH:
        problems.append(f"event name has {len(event.event)} characters, at most 1024 allowed")
    problems.extend(_label_problems("resource", event.resource, role_required=False))
    if len(event.related) > MAX_RELATED:
        problems.append(f"{len(event.related)} related resources, at most {MAX_RELATED} allowed")
    for index, related in enumerate(event.related):
        problems.extend(_label_problems(f"related[{index}]", related, role_required=True))
    if event.follows is not None and event.follows == event.id:
        problems.append("event follows itself")
    if event.occurred.tzinfo is None:
        problems.append("occurred has no time zone")
    if not problems:
        try:
            size = len(event.to_json())
        except orjson.JSONEncodeError as exc:
            problems.append(f"payload cannot be written as JSON: {exc}")
        else:
            if size >= MAX_EVENT_BYTES:
                problems.append(
                    f"serialized event is {size} bytes, must stay under {MAX_EVENT_BYTES}"
                )
    return problems


def _label_problems(where: str, labels: Labels, *, role_required: bool) -> list[str]:
    problems: list[str] = []
    if len(labels) > MAX_LABELS:
        problems.append(f"{where} has {len(labels)} labels, at most {MAX_LABELS} allowed")
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            problems.append(
                f"{where} label {key!r} has a {type(value).__name__} value, not a string"
            )
    if not labels.get(RESOURCE_ID):
        problems.append(f"{where} lacks a non-empty {RESOURCE_ID}")
    if role_required and not labels.get(RESOURCE_ROLE):
        problems.append(f"{where} lacks a non-empty {RESOURCE_ROLE}")
    return problems


def accepted_size(event: Event) -> int | None:
    """Bytes of the event's JSON when the events API will take it; None when
    `limit_problems` has something to say.

    The checks that data can fail, in one pass for the usual, valid event: the limits,
    ids and roles present, a time zone, JSON-able payload. Label values are not checked
    for being strings here, as `limit_problems` does: the catalog's typed builders and each
    source's input checks guarantee them, and a second pass over every label of every
    event would sit on the per-event path.
    """
    if not 0 < len(event.event) <= MAX_EVENT_NAME_LENGTH or len(event.related) > MAX_RELATED:
        return None
    if event.occurred.tzinfo is None or (event.follows is not None and event.follows == event.id):
        return None
    labels = event.resource
    if len(labels) > MAX_LABELS or not labels.get(RESOURCE_ID):
        return None
    for labels in event.related:
        if len(labels) > MAX_LABELS or not labels.get(RESOURCE_ID) or not labels.get(RESOURCE_ROLE):
            return None
    try:
        size = len(event.to_json())
    except orjson.JSONEncodeError:
        return None
    return size if size < MAX_EVENT_BYTES else None


class WireEvent(pydantic.BaseModel):
    """An event as read from JSON (the stdout sink, the API, `emit`), checked on the way in."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    occurred: pydantic.AwareDatetime
    event: str
    resource: dict[str, str]
    related: list[dict[str, str]] = []
    payload: dict[str, Any] = {}
    id: UUID
    follows: UUID | None = None

    def to_event(self) -> Event:
        return Event(
            occurred=utc(self.occurred),
            event=self.event,
            resource=self.resource,
            related=tuple(self.related),
            payload=self.payload,
            id=self.id,
            follows=self.follows,
        )


def parse_wire_event(raw: str | bytes) -> Event:
    """Parse one JSON event; raises `pydantic.ValidationError` naming each wrong field."""
    return WireEvent.model_validate_json(raw).to_event()
