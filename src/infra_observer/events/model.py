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
    """One event. Built by the catalog, so its shape is right by construction."""

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
        # Spelled out: `dataclasses.replace` costs twice as much, once per emitted event.
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
        size = len(event.to_json())
        if size >= MAX_EVENT_BYTES:
            problems.append(f"serialized event is {size} bytes, must stay under {MAX_EVENT_BYTES}")
    return problems


def _label_problems(where: str, labels: Labels, *, role_required: bool) -> list[str]:
    if _labels_size(labels, role_required=role_required) is not None:
        return []
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


def checked_size(event: Event) -> int | None:
    """Estimated bytes of the event's JSON, or None when `limit_problems` would find
    something other than its size. One pass over the labels, for the usual, valid event.
    """
    if not 0 < len(event.event) <= MAX_EVENT_NAME_LENGTH or len(event.related) > MAX_RELATED:
        return None
    if event.occurred.tzinfo is None or (event.follows is not None and event.follows == event.id):
        return None
    size = _labels_size(event.resource, role_required=False)
    if size is None:
        return None
    for related in event.related:
        related_size = _labels_size(related, role_required=True)
        if related_size is None:
            return None
        size += related_size
    if event.payload:
        size += len(repr(event.payload))
    return size + _EVENT_OVERHEAD_BYTES + len(event.event)


# Each event adds its JSON punctuation and field names to the label and payload text.
_EVENT_OVERHEAD_BYTES = 256


def _labels_size(labels: Labels, *, role_required: bool) -> int | None:
    """The labels' text plus JSON punctuation; None unless every check of
    `_label_problems` passes."""
    if len(labels) > MAX_LABELS or not labels.get(RESOURCE_ID):
        return None
    if role_required and not labels.get(RESOURCE_ROLE):
        return None
    size = 6 * len(labels)
    for key, value in labels.items():
        if type(key) is not str or type(value) is not str:
            return None
        size += len(key) + len(value)
    return size


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
