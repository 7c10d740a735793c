"""How a container last exited, read from Docker's JSON: `State.ExitCode`, `State.OOMKilled`
and `Config.Tty` of an inspected container, and the `exitCode` of a `die` event."""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest

from infra_observer.errors import InputError
from infra_observer.sources.docker.wire import event_exit_code, parse_event, parse_inspect

CID = "4f1e" + "a" * 60


def inspected(state: dict[str, Any], config: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"Id": CID, "State": {"Status": "exited", **state}, "Config": config or {}}


class Row(NamedTuple):
    name: str
    raw: dict[str, Any]
    exit_code: int | None
    oom_killed: bool
    tty: bool
    problems: tuple[str, ...] = ()


ROWS = (
    Row("exited 3", inspected({"ExitCode": 3, "OOMKilled": False}), 3, False, False),
    Row("OOM-killed", inspected({"ExitCode": 137, "OOMKilled": True}), 137, True, False),
    Row("with a TTY", inspected({"ExitCode": 0}, {"Tty": True}), 0, False, True),
    Row("none of them", inspected({}), None, False, False),
    Row("no Config", {"Id": CID, "State": {"Status": "exited", "ExitCode": 1}}, 1, False, False),
    Row(
        "an exit code that is text",
        inspected({"ExitCode": "3"}),
        None,
        False,
        False,
        ("State.ExitCode is '3', not an integer",),
    ),
    Row(
        "an exit code that is a boolean",
        inspected({"ExitCode": True}),
        None,
        False,
        False,
        ("State.ExitCode is True, not an integer",),
    ),
    Row(
        "OOMKilled that is a number, Tty that is text",
        inspected({"ExitCode": 137, "OOMKilled": 1}, {"Tty": "yes"}),
        137,
        False,
        False,
        ("State.OOMKilled is 1, not a boolean", "Config.Tty is 'yes', not a boolean"),
    ),
)


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_the_exit_is_read_and_a_malformed_field_left_out(row: Row) -> None:
    container = parse_inspect(row.raw)
    got = (container.exit_code, container.oom_killed, container.tty, container.problems)
    assert got == (row.exit_code, row.oom_killed, row.tty, row.problems)


def die(**attributes: str) -> dict[str, Any]:
    actor = {"ID": CID, "Attributes": {"name": "box", **attributes}}
    return {"Type": "container", "Action": "die", "Actor": actor, "timeNano": 1}


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [({"exitCode": "3"}, 3), ({"exitCode": "0"}, 0), ({}, None)],
)
def test_a_die_event_says_how_the_container_exited(
    attributes: dict[str, str], expected: int | None
) -> None:
    event = parse_event(die(**attributes))
    assert event is not None
    assert event_exit_code(event) == expected


def test_a_die_event_with_a_malformed_exit_code_is_an_input_error() -> None:
    event = parse_event(die(exitCode="three"))
    assert event is not None
    with pytest.raises(InputError, match="die event has exitCode 'three', not an integer"):
        event_exit_code(event)
