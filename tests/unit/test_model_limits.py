from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pydantic
import pytest

from infra_observer.events.model import Event, limit_problems, parse_wire_event

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def make(**overrides: object) -> Event:
    fields: dict[str, object] = {
        "occurred": NOW,
        "event": "prefect.kubernetes.pod.running",
        "resource": {"prefect.resource.id": "prefect.kubernetes.pod.u"},
        "related": (
            {"prefect.resource.id": "prefect.flow-run.x", "prefect.resource.role": "flow-run"},
        ),
        "id": uuid.UUID(int=1),
    }
    fields.update(overrides)
    return Event(**fields)  # type: ignore[arg-type]


def test_a_valid_event_has_no_problems() -> None:
    assert limit_problems(make()) == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"event": ""}, "event name is empty"),
        ({"event": "x" * 1025}, "at most 1024"),
        ({"resource": {}}, "resource lacks a non-empty prefect.resource.id"),
        ({"resource": {"prefect.resource.id": ""}}, "lacks a non-empty"),
        ({"resource": {"prefect.resource.id": "r", "n": 3}}, "int value, not a string"),
        (
            {"related": ({"prefect.resource.id": "x"},)},
            "related[0] lacks a non-empty prefect.resource.role",
        ),
        (
            {
                "related": tuple(
                    {"prefect.resource.id": "x", "prefect.resource.role": "r"} for _ in range(101)
                )
            },
            "at most 100",
        ),
        (
            {"resource": {"prefect.resource.id": "r", **{f"k{i}": "v" for i in range(500)}}},
            "at most 500",
        ),
        ({"follows": uuid.UUID(int=1)}, "follows itself"),
        ({"occurred": datetime(2026, 1, 1)}, "no time zone"),
        ({"payload": {"blob": "x" * 1_500_000}}, "must stay under 1500000"),
    ],
)
def test_each_limit_is_reported(overrides: dict[str, object], expected: str) -> None:
    problems = limit_problems(make(**overrides))
    assert any(expected in problem for problem in problems), problems


def test_wire_form_round_trips() -> None:
    event = make(payload={"a": [1, 2]}, follows=uuid.UUID(int=2))
    wire = orjson.loads(event.to_json())
    assert wire["occurred"] == "2026-01-01T00:00:00Z"
    assert wire["id"] == str(uuid.UUID(int=1))
    assert parse_wire_event(event.to_json()) == make(
        payload={"a": [1, 2]}, follows=uuid.UUID(int=2)
    )


def test_parsing_names_the_wrong_field() -> None:
    with pytest.raises(pydantic.ValidationError, match="occurred"):
        parse_wire_event(
            b'{"occurred": "yesterday", "event": "e", "resource": {}, "id": "'
            + str(uuid.UUID(int=1)).encode()
            + b'"}'
        )
