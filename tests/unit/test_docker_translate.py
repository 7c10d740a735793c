"""The Docker source's pure steps: Docker's JSON read (`wire.py`), the containers selected
(`selection.py`) and each observation translated (`translate.py`); plain dicts in, events
out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from infra_observer.errors import InputError
from infra_observer.events.ids import container_event_id
from infra_observer.events.model import limit_problems
from infra_observer.sources.base import Translation
from infra_observer.sources.docker.selection import is_selected
from infra_observer.sources.docker.translate import (
    ContainerState,
    ListedContainer,
    MissingContainer,
    StreamedEvent,
    needs_inspect,
    translate,
)
from infra_observer.sources.docker.wire import (
    parse_event,
    parse_event_line,
    parse_inspect,
    parse_timestamp,
)

CID = "4f1e" + "a" * 60
FLOW_RUN = "0b5f1a6e-8c8f-4a64-9d0e-3f1f3a0d2b11"
DEPLOYMENT = "1c6f2b7f-9d90-4b75-8e1f-4020b41e3c22"
FLOW = "2d703c80-0ea1-4c86-9f20-5131c52f4d33"
POOL = "3e814d91-1fb2-4d97-a031-6242d6305e44"
WORKER = "docker-host-1"
ZERO = "0001-01-01T00:00:00Z"
CREATED = "2026-01-01T10:00:00.100000001Z"
STARTED = "2026-01-01T10:00:01.200000002Z"
FINISHED = "2026-01-01T10:00:09.300000003Z"
STARTED_2 = "2026-01-01T10:00:12.400000004Z"
LABELS = {
    "io.prefect.flow-run-id": FLOW_RUN,
    "io.prefect.flow-run-name": "happy-cat",
    "io.prefect.version": "3.8.8",
}


def ns(timestamp: str) -> int:
    value = parse_timestamp(timestamp)
    assert value is not None
    return value


def event(action: str, at: str, **attributes: str) -> dict[str, Any]:
    """A container event as `GET /events` streams it."""
    attrs = {"image": "busybox", "name": "flow-run-abc", **LABELS, **attributes}
    return {
        "status": action,
        "id": CID,
        "from": "busybox",
        "Type": "container",
        "Action": action,
        "Actor": {"ID": CID, "Attributes": attrs},
        "scope": "local",
        "time": ns(at) // 1_000_000_000,
        "timeNano": ns(at),
    }


def inspect(
    status: str,
    *,
    started: str = STARTED,
    finished: str = ZERO,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`GET /containers/{id}/json`, the parts translate reads."""
    return {
        "Id": CID,
        "Name": "/flow-run-abc",
        "Created": CREATED,
        "State": {
            "Status": status,
            "Running": status == "running",
            "Paused": status == "paused",
            "Restarting": status == "restarting",
            "OOMKilled": False,
            "Dead": status == "dead",
            "Pid": 0,
            "ExitCode": 0,
            "StartedAt": ZERO if status == "created" else started,
            "FinishedAt": finished,
        },
        "Config": {"Labels": LABELS if labels is None else labels},
    }


def step(
    raw_event: dict[str, Any],
    raw_inspect: dict[str, Any] | None,
    *,
    previous: ContainerState | None,
) -> Translation[ContainerState]:
    """An event of the stream, with the container as inspected after it."""
    parsed = parse_event(raw_event)
    assert parsed is not None
    inspected = parse_inspect(raw_inspect) if raw_inspect is not None else None
    return translate(StreamedEvent(parsed, inspected), previous, worker_name=WORKER)


def listed(
    raw_inspect: dict[str, Any], previous: ContainerState | None, *, observed: int
) -> Translation[ContainerState]:
    """A container found by a listing the daemon dated `observed`."""
    observation = ListedContainer(parse_inspect(raw_inspect), observed)
    return translate(observation, previous, worker_name=WORKER)


def state(status: Any, **marks: str) -> ContainerState:
    return ContainerState(CID, "flow-run-abc", LABELS, status, marks)


# --- Parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "base", "detail"),
    [
        ("start", "start", None),
        ("exec_start: sh -c echo hi", "exec_start", "sh -c echo hi"),
        ("health_status: healthy", "health_status", "healthy"),
        ("exec_create: sh", "exec_create", "sh"),
    ],
)
def test_actions_are_split_on_their_suffix(action: str, base: str, detail: str | None) -> None:
    parsed = parse_event(event(action, STARTED))
    assert parsed is not None
    assert (parsed.action, parsed.detail) == (base, detail)


def test_non_container_events_are_not_parsed() -> None:
    raw = event("create", STARTED) | {"Type": "network"}
    assert parse_event(raw) is None


def test_time_falls_back_to_seconds() -> None:
    raw = event("start", STARTED)
    del raw["timeNano"]
    parsed = parse_event(raw)
    assert parsed is not None
    assert parsed.time_nano == ns("2026-01-01T10:00:01Z")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"Type": "container", "Actor": {"ID": "x"}, "timeNano": 1}', "no Action"),
        (b'{"Type": "container", "Action": "start", "timeNano": 1}', "no Actor.ID"),
        (b'{"Type": "container", "Action": "start", "Actor": {"ID": "x"}}', "neither timeNano"),
        (
            b'{"Action": "start", "Actor": {"ID": "x", "Attributes": [1]}, "timeNano": 1}',
            "Attributes",
        ),
    ],
)
def test_malformed_lines_raise_input_error(line: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_event_line(line)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"State": {}}, "no Id"),
        ({"Id": CID}, "no State"),
        ({"Id": CID, "State": {"Status": "sleeping"}}, "unknown State.Status"),
        (
            {"Id": CID, "State": {"Status": "running", "StartedAt": "yesterday"}},
            "not RFC 3339",
        ),
    ],
)
def test_malformed_containers_raise_input_error(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_inspect(raw)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01T00:00:01Z", 1_000_000_000),
        ("1970-01-01T00:00:01.5Z", 1_500_000_000),
        ("1970-01-01T00:00:01.000000007Z", 1_000_000_007),
        ("1970-01-01T01:00:01.000000007+01:00", 1_000_000_007),
        (ZERO, None),
        ("", None),
        (None, None),
    ],
)
def test_timestamps_keep_nanoseconds(text: str | None, expected: int | None) -> None:
    assert parse_timestamp(text) == expected


# --- Selection ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "filters", "selected"),
    [
        ({"io.prefect.flow-run-id": FLOW_RUN}, [], True),
        ({"prefect.io/flow-run-id": FLOW_RUN}, [], True),
        # Present but empty: selected, as by the daemon's filter, then skipped and reported.
        ({"io.prefect.flow-run-id": ""}, [], True),
        ({"app": "web"}, [], False),
        ({"io.prefect.flow-run-id": FLOW_RUN, "team": "a"}, ["team"], True),
        ({"io.prefect.flow-run-id": FLOW_RUN, "team": "a"}, ["team=a"], True),
        ({"io.prefect.flow-run-id": FLOW_RUN, "team": "b"}, ["team=a"], False),
        ({"io.prefect.flow-run-id": FLOW_RUN}, ["team"], False),
    ],
)
def test_selection(labels: dict[str, str], filters: list[str], selected: bool) -> None:
    assert is_selected(labels, label_filters=filters) is selected


@pytest.mark.parametrize(
    ("action", "needed"),
    [
        ("create", True),
        ("start", True),
        ("die", True),
        ("kill", True),
        ("pause", True),
        ("destroy", False),
        ("exec_start: sh", False),
        ("health_status: unhealthy", False),
        ("rename", False),
    ],
)
def test_needs_inspect(action: str, needed: bool) -> None:
    parsed = parse_event(event(action, STARTED))
    assert parsed is not None
    assert needs_inspect(parsed) is needed


# --- Stream events ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Case:
    action: str
    at: str
    inspected: dict[str, Any] | None
    previous: ContainerState | None
    emitted: list[str]
    status: str | None
    occurred: str | None = None
    marks: dict[str, str] = field(default_factory=dict)


CASES = {
    "create": Case(
        action="create",
        at=CREATED,
        inspected=inspect("created"),
        previous=None,
        emitted=["created"],
        status="created",
        occurred=CREATED,
        marks={},
    ),
    "start": Case(
        action="start",
        at="2026-01-01T10:00:01.3Z",
        inspected=inspect("running"),
        previous=state("created"),
        emitted=["running"],
        status="running",
        occurred=STARTED,
        marks={"started_at": str(ns(STARTED))},
    ),
    "start already listed": Case(
        action="start",
        at="2026-01-01T10:00:01.3Z",
        inspected=inspect("running"),
        previous=state("running", started_at=str(ns(STARTED))),
        emitted=[],
        status="running",
    ),
    "restart completed is the start again": Case(
        action="restart",
        at="2026-01-01T10:00:01.3Z",
        inspected=inspect("running"),
        previous=state("running", started_at=str(ns(STARTED))),
        emitted=[],
        status="running",
    ),
    "start read late, after a later run began": Case(
        action="start",
        at="2026-01-01T10:00:01.3Z",
        inspected=inspect("running", started=STARTED_2),
        previous=state("created"),
        emitted=["running"],
        status="running",
        occurred="2026-01-01T10:00:01.3Z",
        marks={"started_at": str(ns("2026-01-01T10:00:01.3Z"))},
    ),
    "die with exit code": Case(
        action="die",
        at="2026-01-01T10:00:09.4Z",
        inspected=inspect("exited", finished=FINISHED),
        previous=state("running", started_at=str(ns(STARTED))),
        emitted=["exited"],
        status="exited",
        occurred=FINISHED,
        marks={"finished_at": str(ns(FINISHED))},
    ),
    "restarted by hand, stop read after the start": Case(
        action="stop",
        at="2026-01-01T10:00:09.5Z",
        inspected=inspect("running", started=STARTED_2, finished=FINISHED),
        previous=state("exited", finished_at=str(ns(FINISHED))),
        emitted=[],
        status="exited",
    ),
    "stop after die": Case(
        action="stop",
        at="2026-01-01T10:00:09.5Z",
        inspected=inspect("exited", finished=FINISHED),
        previous=state("exited", finished_at=str(ns(FINISHED))),
        emitted=[],
        status="exited",
    ),
    "kill that ended it": Case(
        action="kill",
        at="2026-01-01T10:00:09.4Z",
        inspected=inspect("exited", finished=FINISHED),
        previous=state("running", started_at=str(ns(STARTED))),
        emitted=["exited"],
        status="exited",
        occurred=FINISHED,
        marks={"finished_at": str(ns(FINISHED))},
    ),
    "oom read after the exit it caused": Case(
        action="oom",
        at="2026-01-01T10:00:09.2Z",
        inspected=inspect("exited", finished=FINISHED),
        previous=state("running", started_at=str(ns(STARTED))),
        emitted=["exited"],
        status="exited",
        occurred=FINISHED,
        marks={"finished_at": str(ns(FINISHED))},
    ),
    "kill it survived": Case(
        action="kill",
        at="2026-01-01T10:00:05Z",
        inspected=inspect("running"),
        previous=state("running", started_at=str(ns(STARTED))),
        emitted=[],
        status="running",
    ),
    "oom before its die": Case(
        action="oom",
        at="2026-01-01T10:00:05Z",
        inspected=inspect("running"),
        previous=state("running", started_at=str(ns(STARTED))),
        emitted=[],
        status="running",
    ),
    "die under a restart policy": Case(
        action="die",
        at="2026-01-01T10:00:09.4Z",
        inspected=inspect("restarting", finished=FINISHED),
        previous=state("running", started_at=str(ns(STARTED))),
        emitted=["restarting"],
        status="restarting",
        occurred=FINISHED,
        marks={"finished_at": str(ns(FINISHED))},
    ),
    "die read after the restart": Case(
        action="die",
        at="2026-01-01T10:00:09.4Z",
        inspected=inspect("running", started=STARTED_2, finished=FINISHED),
        previous=state("running", started_at=str(ns(STARTED))),
        emitted=["restarting"],
        status="restarting",
        occurred=FINISHED,
        marks={"finished_at": str(ns(FINISHED))},
    ),
    "die into dead": Case(
        action="die",
        at="2026-01-01T10:00:09.4Z",
        inspected=inspect("dead", finished=FINISHED),
        previous=state("running", started_at=str(ns(STARTED))),
        emitted=["dead"],
        status="dead",
        occurred=FINISHED,
        marks={"finished_at": str(ns(FINISHED))},
    ),
    "die of a container already removed": Case(
        action="die",
        at="2026-01-01T10:00:09.4Z",
        inspected=None,
        previous=state("running", started_at=str(ns(STARTED))),
        emitted=["exited"],
        status="exited",
        occurred="2026-01-01T10:00:09.4Z",
        marks={"finished_at": str(ns("2026-01-01T10:00:09.4Z"))},
    ),
    "kill of a container already removed": Case(
        action="kill",
        at="2026-01-01T10:00:09.4Z",
        inspected=None,
        previous=state("running", started_at=str(ns(STARTED))),
        emitted=[],
        status="running",
    ),
    "pause": Case(
        action="pause",
        at="2026-01-01T10:00:03Z",
        inspected=inspect("paused"),
        previous=state("running", started_at=str(ns(STARTED))),
        emitted=["paused"],
        status="paused",
        occurred="2026-01-01T10:00:03Z",
        # Docker dates no pause: the run identifies it (see the listing's tests).
        marks={"started_at": str(ns(STARTED))},
    ),
    "pause after an unpause": Case(
        action="pause",
        at="2026-01-01T10:00:05Z",
        inspected=inspect("paused"),
        previous=state("running", started_at=str(ns(STARTED)), unpaused_at="4"),
        emitted=["paused"],
        status="paused",
        occurred="2026-01-01T10:00:05Z",
        marks={"started_at": str(ns(STARTED)), "unpaused_at": "4"},
    ),
    "pause already listed": Case(
        action="pause",
        at="2026-01-01T10:00:03Z",
        inspected=inspect("paused"),
        previous=state("paused", started_at=str(ns(STARTED)), paused_at="1"),
        emitted=[],
        status="paused",
    ),
    "unpause": Case(
        action="unpause",
        at="2026-01-01T10:00:04Z",
        inspected=inspect("running"),
        previous=state("paused", started_at=str(ns(STARTED)), paused_at="1"),
        emitted=["running"],
        status="running",
        occurred="2026-01-01T10:00:04Z",
        marks={"started_at": str(ns(STARTED)), "unpaused_at": str(ns("2026-01-01T10:00:04Z"))},
    ),
    "destroy": Case(
        action="destroy",
        at="2026-01-01T10:00:20Z",
        inspected=None,
        previous=state("exited", finished_at=str(ns(FINISHED))),
        emitted=["removing"],
        status=None,
        occurred="2026-01-01T10:00:20Z",
    ),
    "destroy of a container listed as removing": Case(
        action="destroy",
        at="2026-01-01T10:00:20Z",
        inspected=None,
        previous=state("removing"),
        emitted=[],
        status=None,
    ),
    "destroy of an unknown container": Case(
        action="destroy",
        at="2026-01-01T10:00:20Z",
        inspected=None,
        previous=None,
        emitted=["removing"],
        status=None,
        occurred="2026-01-01T10:00:20Z",
    ),
    "exec": Case(
        action="exec_start: sh -c ls",
        at="2026-01-01T10:00:05Z",
        inspected=None,
        previous=None,
        emitted=[],
        status=None,
    ),
    "health": Case(
        action="health_status: unhealthy",
        at="2026-01-01T10:00:05Z",
        inspected=None,
        previous=state("running", started_at="1"),
        emitted=[],
        status="running",
    ),
    "rename": Case(
        action="rename",
        at="2026-01-01T10:00:05Z",
        inspected=None,
        previous=state("created"),
        emitted=[],
        status="created",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_stream_event(case: Case) -> None:
    result = step(event(case.action, case.at), case.inspected, previous=case.previous)
    assert [e.event.rsplit(".", 1)[-1] for e in result.events] == case.emitted
    assert (result.state.status if result.state else None) == case.status
    assert result.problems == []
    assert result.key == CID
    # No event means nothing new: the status was already reported, or the action has none.
    assert result.unchanged == (None if case.emitted else "repeated")
    for emitted in result.events:
        assert limit_problems(emitted) == []
        assert emitted.follows is None
        assert emitted.occurred == datetime.fromisoformat(case.occurred or "").astimezone(UTC)
        assert emitted.id == container_event_id(
            container_id=CID, status=case.emitted[0], state_marks=case.marks
        )


def test_unchanged_events_keep_the_state_and_its_marks() -> None:
    previous = state("running", started_at=str(ns(STARTED)))
    result = step(event("exec_die", FINISHED), None, previous=previous)
    assert result.state is previous


# --- Sequences and ids --------------------------------------------------------------------


def run_sequence(steps: list[tuple[str, str, dict[str, Any] | None]]) -> list[Any]:
    previous: ContainerState | None = None
    emitted = []
    for action, at, raw_inspect in steps:
        result = step(event(action, at), raw_inspect, previous=previous)
        previous = result.state
        emitted.extend(result.events)
    return emitted


def test_pause_cycles_get_distinct_ids() -> None:
    running, paused = inspect("running"), inspect("paused")
    emitted = run_sequence(
        [
            ("create", CREATED, inspect("created")),
            ("start", "2026-01-01T10:00:01.3Z", running),
            ("pause", "2026-01-01T10:00:02Z", paused),
            ("unpause", "2026-01-01T10:00:03Z", running),
            ("pause", "2026-01-01T10:00:04Z", paused),
            ("unpause", "2026-01-01T10:00:05Z", running),
            ("kill", "2026-01-01T10:00:09.25Z", inspect("exited", finished=FINISHED)),
            ("die", "2026-01-01T10:00:09.4Z", inspect("exited", finished=FINISHED)),
            ("stop", "2026-01-01T10:00:09.5Z", inspect("exited", finished=FINISHED)),
            ("destroy", "2026-01-01T10:00:10Z", None),
        ]
    )
    names = [e.event.rsplit(".", 1)[-1] for e in emitted]
    assert names == [
        "created",
        "running",
        "paused",
        "running",
        "paused",
        "running",
        "exited",
        "removing",
    ]
    assert len({e.id for e in emitted}) == len(emitted)


def test_replaying_a_stream_gives_the_same_ids() -> None:
    steps: list[tuple[str, str, dict[str, Any] | None]] = [
        ("create", CREATED, inspect("created")),
        ("start", "2026-01-01T10:00:01.3Z", inspect("running")),
        ("die", "2026-01-01T10:00:09.4Z", inspect("exited", finished=FINISHED)),
    ]
    assert [e.id for e in run_sequence(steps)] == [e.id for e in run_sequence(steps)]


@pytest.mark.parametrize(
    ("action", "at", "raw"),
    [
        ("create", CREATED, inspect("created")),
        ("start", "2026-01-01T10:00:01.3Z", inspect("running")),
        ("die", "2026-01-01T10:00:09.4Z", inspect("exited", finished=FINISHED)),
        ("die", "2026-01-01T10:00:09.4Z", inspect("dead", finished=FINISHED)),
        ("die", "2026-01-01T10:00:09.4Z", inspect("restarting", finished=FINISHED)),
        ("pause", "2026-01-01T10:00:03Z", inspect("paused")),
    ],
)
def test_stream_and_listing_agree_on_ids(action: str, at: str, raw: dict[str, Any]) -> None:
    """A restarted observer lists what a running one saw streamed: the ids must match."""
    streamed = step(event(action, at), raw, previous=None).events
    from_listing = listed(raw, None, observed=ns(at)).events
    assert [e.id for e in from_listing] == [e.id for e in streamed]
    assert [e.occurred for e in from_listing] == [e.occurred for e in streamed]


# --- Listing ------------------------------------------------------------------------------


OBSERVED = "2026-01-01T11:00:00Z"


@dataclass(frozen=True, kw_only=True)
class ListCase:
    inspected: dict[str, Any]
    previous: ContainerState | None
    emitted: list[str]
    occurred: str | None = None


LIST_CASES = {
    "new running": ListCase(
        inspected=inspect("running"), previous=None, emitted=["running"], occurred=STARTED
    ),
    "known running": ListCase(
        inspected=inspect("running"),
        previous=state("running", started_at=str(ns(STARTED))),
        emitted=[],
    ),
    "running, restarted meanwhile": ListCase(
        inspected=inspect("running", started=STARTED_2, finished=FINISHED),
        previous=state("running", started_at=str(ns(STARTED))),
        emitted=["running"],
        occurred=STARTED_2,
    ),
    "exited meanwhile": ListCase(
        inspected=inspect("exited", finished=FINISHED),
        previous=state("running", started_at=str(ns(STARTED))),
        emitted=["exited"],
        occurred=FINISHED,
    ),
    "exit already reported": ListCase(
        inspected=inspect("exited", finished=FINISHED),
        previous=state("exited", finished_at=str(ns(FINISHED))),
        emitted=[],
    ),
    "restart given up": ListCase(
        inspected=inspect("exited", finished=FINISHED),
        previous=state("restarting", finished_at=str(ns(FINISHED))),
        emitted=["exited"],
        occurred=FINISHED,
    ),
    "paused meanwhile": ListCase(
        inspected=inspect("paused"),
        previous=state("running", started_at=str(ns(STARTED))),
        emitted=["paused"],
        occurred=OBSERVED,
    ),
    "unpaused meanwhile": ListCase(
        inspected=inspect("running"),
        previous=state("paused", started_at=str(ns(STARTED)), paused_at="1"),
        emitted=["running"],
        occurred=OBSERVED,
    ),
    "created, never started": ListCase(
        inspected=inspect("created"), previous=None, emitted=["created"], occurred=CREATED
    ),
    "being removed": ListCase(
        inspected=inspect("removing", finished=FINISHED),
        previous=state("exited", finished_at=str(ns(FINISHED))),
        emitted=["removing"],
        occurred=OBSERVED,
    ),
}


@pytest.mark.parametrize("case", LIST_CASES.values(), ids=LIST_CASES.keys())
def test_listing(case: ListCase) -> None:
    result = listed(case.inspected, case.previous, observed=ns(OBSERVED))
    assert [e.event.rsplit(".", 1)[-1] for e in result.events] == case.emitted
    for emitted in result.events:
        assert emitted.occurred == datetime.fromisoformat(case.occurred or "").astimezone(UTC)
    assert result.state is not None
    assert result.state.status == case.inspected["State"]["Status"]


@pytest.mark.parametrize(
    "before",
    [
        None,
        state("running", started_at=str(ns(STARTED))),
        state("running", started_at=str(ns(STARTED)), unpaused_at="4"),
    ],
    ids=["observer-started", "seen-running", "seen-unpaused"],
)
def test_a_paused_container_keeps_its_pause_id_across_listings(
    before: ContainerState | None,
) -> None:
    """Listed at every start, streamed when watched live: one pause, one id."""
    streamed = step(
        event("pause", "2026-01-01T10:00:03Z"), inspect("paused"), previous=before
    ).events
    listings = [
        listed(inspect("paused"), before, observed=t)
        for t in (ns(OBSERVED), ns(OBSERVED) + 3_600_000_000_000)
    ]
    ids = {e.id for listing in listings for e in listing.events}
    assert len(streamed) == 1
    assert ids == {streamed[0].id}


def test_unpaused_while_disconnected_is_not_the_first_running() -> None:
    first = listed(inspect("running"), None, observed=1)
    again = listed(
        inspect("running"),
        state("paused", started_at=str(ns(STARTED)), paused_at="1"),
        observed=ns(OBSERVED),
    )
    assert first.events[0].id != again.events[0].id


def test_vanished_container_is_removing_and_forgotten() -> None:
    result = translate(
        MissingContainer(CID, ns(OBSERVED)),
        state("exited", finished_at="1"),
        worker_name=WORKER,
    )
    assert [e.event for e in result.events] == ["prefect.docker.container.removing"]
    assert result.state is None
    assert result.key == CID
    assert result.events[0].id == container_event_id(
        container_id=CID, status="removing", state_marks={}
    )


def test_a_missing_container_never_known_gives_nothing() -> None:
    result = translate(MissingContainer(CID, ns(OBSERVED)), None, worker_name=WORKER)
    assert (result.key, result.state, result.events) == (CID, None, [])
    assert result.unchanged == "repeated"


def test_a_container_missing_again_after_its_removal_was_listed_gives_nothing_new() -> None:
    result = translate(MissingContainer(CID, ns(OBSERVED)), state("removing"), worker_name=WORKER)
    assert (result.state, result.events, result.unchanged) == (None, [], "repeated")


# --- Resources ----------------------------------------------------------------------------


def related_by_role(labels: dict[str, str]) -> dict[str, dict[str, str]]:
    result = listed(inspect("running", labels=labels), None, observed=1)
    return {r["prefect.resource.role"]: dict(r) for r in result.events[0].related}


def test_resource_and_related_resources() -> None:
    labels = {
        **LABELS,
        "io.prefect.deployment-id": DEPLOYMENT,
        "io.prefect.deployment-name": "nightly",
        "io.prefect.flow-id": FLOW,
        "io.prefect.flow-name": "etl",
        "io.prefect.work-pool-id": POOL,
        "io.prefect.work-pool-name": "docker-pool",
    }
    result = listed(inspect("running", labels=labels), None, observed=1)
    (emitted,) = result.events
    assert emitted.event == "prefect.docker.container.running"
    assert dict(emitted.resource) == {
        "prefect.resource.id": f"prefect.docker.container.{CID}",
        "prefect.resource.name": "flow-run-abc",
    }
    assert [dict(r) for r in emitted.related] == [
        {
            "prefect.resource.id": f"prefect.flow-run.{FLOW_RUN}",
            "prefect.resource.role": "flow-run",
            "prefect.resource.name": "happy-cat",
        },
        {
            "prefect.resource.id": f"prefect.flow.{FLOW}",
            "prefect.resource.role": "flow",
            "prefect.resource.name": "etl",
        },
        {
            "prefect.resource.id": f"prefect.deployment.{DEPLOYMENT}",
            "prefect.resource.role": "deployment",
            "prefect.resource.name": "nightly",
        },
        {
            "prefect.resource.id": f"prefect.work-pool.{POOL}",
            "prefect.resource.role": "work-pool",
            "prefect.resource.name": "docker-pool",
        },
        {
            "prefect.resource.id": "prefect.worker.docker.docker-host-1",
            "prefect.resource.role": "worker",
            "prefect.resource.name": "docker-host-1",
            "prefect.worker-type": "docker",
        },
    ]
    assert emitted.payload == {}


def test_worker_label_wins_over_the_configured_name() -> None:
    related = related_by_role({**LABELS, "io.prefect.worker-name": "My Worker"})
    assert related["worker"]["prefect.resource.id"] == "prefect.worker.docker.my-worker"
    assert related["worker"]["prefect.worker-type"] == "docker"


def test_slash_form_labels_are_read_too() -> None:
    related = related_by_role({"prefect.io/flow-run-id": FLOW_RUN})
    assert related["flow-run"]["prefect.resource.id"] == f"prefect.flow-run.{FLOW_RUN}"
    assert related["worker"]["prefect.resource.id"] == "prefect.worker.docker.docker-host-1"


def test_bad_label_is_a_problem_and_the_event_still_goes() -> None:
    result = listed(
        inspect("running", labels={**LABELS, "io.prefect.flow-id": "nope"}), None, observed=1
    )
    assert len(result.events) == 1
    assert [p.kind for p in result.problems] == ["label"]
    assert "flow-id" in result.problems[0].detail
