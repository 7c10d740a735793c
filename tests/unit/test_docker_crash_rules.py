"""What a container's exit asks of its flow run: crashed or nothing, the message, the diagnosis."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra_observer.observations import Level
from infra_observer.sources.docker.catalog import CONTAINER_STATUSES
from infra_observer.sources.docker.lifecycle import (
    RESOLUTIONS,
    ContainerExit,
    DockerCategory,
    explain,
    observation,
)

RUN = "6f1d2c3b-4a59-4e8f-9b7a-0c1d2e3f4a5b"


async def no_logs(lines: int) -> Sequence[str]:
    return []


class Row(NamedTuple):
    name: str
    ended: ContainerExit
    message: str | None
    """The Crashed state's message; None: no crash."""
    category: DockerCategory | None = None
    summary: str = ""


ROWS = (
    Row("exited 0", ContainerExit("box", "exited", 0), None),
    Row(
        "exited 3",
        ContainerExit("box", "exited", 3),
        "Docker container box exited with code 3.",
        "NonZeroExit",
        "Container box exited with code 3",
    ),
    Row(
        "OOM-killed",
        ContainerExit("box", "exited", 137, oom_killed=True),
        "Docker container box was OOM-killed (exit code 137).",
        "OOMKilled",
        "Container box ran out of memory and was killed (exit code 137)",
    ),
    Row(
        "OOM-killed child, the process exited 0",
        ContainerExit("box", "exited", 0, oom_killed=True),
        "Docker container box was OOM-killed (exit code 0).",
        "OOMKilled",
        "Container box ran out of memory and was killed (exit code 0)",
    ),
    Row(
        "OOM-killed, exit code unreadable",
        ContainerExit("box", "exited", None, oom_killed=True),
        "Docker container box was OOM-killed (no exit code).",
        "OOMKilled",
        "Container box ran out of memory and was killed (no exit code)",
    ),
    Row(
        "dead",
        ContainerExit("4f2a9c1e7b3d", "dead", 1),
        "Docker container 4f2a9c1e7b3d is dead (exit code 1).",
        "NonZeroExit",
        "Container 4f2a9c1e7b3d exited with code 1",
    ),
    Row("exit code unreadable", ContainerExit("box", "exited", None), None),
    Row(
        "restarting: its restart policy runs it again", ContainerExit("box", "restarting", 3), None
    ),
    Row("running, an earlier run's code", ContainerExit("box", "running", 3), None),
    Row("created, never ran", ContainerExit("box", "created", 127), None),
)


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_each_exit_gives_what_the_rules_say(row: Row) -> None:
    told = observation(row.ended, labels={"io.prefect.flow-run-id": RUN}, crash_logs=no_logs)
    if row.message is None:
        assert told is None
        return
    assert told is not None
    assert (told.flow_run_id, told.source, told.wants) == (uuid.UUID(RUN), "docker", "crashed")
    assert told.message == row.message
    assert told.crash_logs is no_logs
    assert told.diagnosis is not None
    assert (told.diagnosis.category, told.diagnosis.summary) == (row.category, row.summary)


class LabelRow(NamedTuple):
    name: str
    labels: dict[str, str]
    flow_run_id: str | None


LABEL_ROWS = (
    LabelRow("Docker worker's form", {"io.prefect.flow-run-id": RUN}, RUN),
    LabelRow("slash form", {"prefect.io/flow-run-id": RUN}, RUN),
    LabelRow(
        "slash form first, as in the events",
        {"prefect.io/flow-run-id": RUN, "io.prefect.flow-run-id": str(uuid.UUID(int=1))},
        RUN,
    ),
    LabelRow("not a UUID", {"io.prefect.flow-run-id": "run-7"}, None),
    LabelRow("no flow-run label", {"other": RUN}, None),
)


@pytest.mark.parametrize("row", LABEL_ROWS, ids=lambda row: row.name)
def test_the_flow_run_comes_from_the_labels(row: LabelRow) -> None:
    told = observation(ContainerExit("box", "exited", 1), labels=row.labels, crash_logs=no_logs)
    assert (None if told is None else str(told.flow_run_id)) == row.flow_run_id


def test_the_diagnosis_can_be_left_out() -> None:
    told = observation(
        ContainerExit("box", "exited", 1),
        labels={"io.prefect.flow-run-id": RUN},
        crash_logs=no_logs,
        with_diagnosis=False,
    )
    assert told is not None
    assert (told.wants, told.diagnosis) == ("crashed", None)


@pytest.mark.parametrize(("category", "level"), [("OOMKilled", "ERROR"), ("NonZeroExit", "ERROR")])
def test_every_category_has_its_level_and_a_resolution(
    category: DockerCategory, level: Level
) -> None:
    ended = ContainerExit("box", "exited", 137, oom_killed=category == "OOMKilled")
    diagnosis = explain(ended)
    assert diagnosis is not None
    assert (diagnosis.category, diagnosis.level) == (category, level)
    assert diagnosis.resolution == RESOLUTIONS[category]


@given(
    status=st.sampled_from(CONTAINER_STATUSES),
    code=st.none() | st.integers(-1, 255),
    oom=st.booleans(),
)
def test_a_crash_always_has_a_message_and_a_diagnosis(
    status: str, code: int | None, oom: bool
) -> None:
    ended = ContainerExit("box", status, code, oom_killed=oom)
    told = observation(ended, labels={"io.prefect.flow-run-id": RUN}, crash_logs=no_logs)
    final_failure = status in ("exited", "dead") and (oom or code not in (None, 0))
    assert (told is not None) == final_failure
    if told is not None:
        assert told.message.startswith("Docker container box ")
        assert told.diagnosis == explain(ended)
