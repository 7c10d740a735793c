"""What an ECS task state change asks of its flow run."""

from __future__ import annotations

from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra_observer.observations import Wanted
from infra_observer.sources.ecs.catalog import ECS_TASK_STATUSES
from infra_observer.sources.ecs.diagnosis import ContainerExit, StopDetail
from infra_observer.sources.ecs.lifecycle import past_pending, wanted

ARN = "arn:aws:ecs:eu-west-1:111122223333:task/prefect/0f3e7a51a3c94d8f"
TASK = "ECS task 0f3e7a51a3c94d8f"


class Row(NamedTuple):
    name: str
    status: str
    stop: StopDetail
    wants: Wanted | None
    message: str
    past_pending: bool = False
    """A pending proposal of the run still queued is withdrawn."""


def exits(*containers: tuple[str, int | None]) -> tuple[ContainerExit, ...]:
    return tuple(ContainerExit(name=name, exit_code=code) for name, code in containers)


ROWS = (
    Row(
        name="provisioning",
        status="provisioning",
        stop=StopDetail(),
        wants="pending",
        message=f"{TASK} is PROVISIONING.",
    ),
    Row(
        name="pending",
        status="pending",
        stop=StopDetail(),
        wants="pending",
        message=f"{TASK} is PENDING.",
    ),
    Row(
        name="activating",
        status="activating",
        stop=StopDetail(),
        wants=None,
        message="",
        past_pending=True,
    ),
    Row(
        name="running",
        status="running",
        stop=StopDetail(),
        wants=None,
        message="",
        past_pending=True,
    ),
    Row(
        name="deactivating",
        status="deactivating",
        stop=StopDetail(),
        wants=None,
        message="",
        past_pending=True,
    ),
    Row(
        name="stopping",
        status="stopping",
        stop=StopDetail(),
        wants=None,
        message="",
        past_pending=True,
    ),
    Row(
        name="deprovisioning",
        status="deprovisioning",
        stop=StopDetail(),
        wants=None,
        message="",
        past_pending=True,
    ),
    Row(name="deleted: says nothing", status="deleted", stop=StopDetail(), wants=None, message=""),
    Row(
        name="prefect exited 0",
        status="stopped",
        stop=StopDetail(stop_code="EssentialContainerExited", containers=exits(("prefect", 0))),
        wants=None,
        message="",
        past_pending=True,
    ),
    Row(
        name="prefect exited 3",
        status="stopped",
        stop=StopDetail(
            stop_code="EssentialContainerExited",
            stopped_reason="Essential container in task exited",
            containers=exits(("prefect", 3), ("sidecar", 0)),
        ),
        wants="crashed",
        message=f"{TASK} stopped: prefect exited with code 3"
        " (stop code EssentialContainerExited; Essential container in task exited).",
    ),
    Row(
        name="a sidecar failed, prefect succeeded",
        status="stopped",
        stop=StopDetail(containers=exits(("prefect", 0), ("sidecar", 1))),
        wants=None,
        message="",
        past_pending=True,
    ),
    Row(
        name="prefect without an exit code",
        status="stopped",
        stop=StopDetail(
            stop_code="TaskFailedToStart",
            containers=(
                ContainerExit(
                    name="prefect", reason="CannotPullContainerError: pull access denied"
                ),
            ),
        ),
        wants="crashed",
        message=f"{TASK} stopped: prefect has no exit code"
        " (CannotPullContainerError: pull access denied) (stop code TaskFailedToStart).",
    ),
    Row(
        name="no containers, failed to start",
        status="stopped",
        stop=StopDetail(
            stop_code="TaskFailedToStart",
            stopped_reason="ResourceInitializationError: unable to pull secrets",
        ),
        wants="crashed",
        message=f"{TASK} stopped before any container ran (stop code TaskFailedToStart;"
        " ResourceInitializationError: unable to pull secrets).",
    ),
    Row(
        name="no containers, stopped by a user",
        status="stopped",
        stop=StopDetail(stop_code="UserInitiated"),
        wants="crashed",
        message=f"{TASK} stopped before any container ran (stop code UserInitiated).",
    ),
    Row(
        name="no container named prefect: any failed one counts",
        status="stopped",
        stop=StopDetail(containers=exits(("flow", 137))),
        wants="crashed",
        message=f"{TASK} stopped: flow exited with code 137.",
    ),
)


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_each_change_asks_what_the_rules_say(row: Row) -> None:
    assert wanted(status=row.status, stop=row.stop, task_arn=ARN) == (row.wants, row.message)
    assert past_pending(status=row.status, stop=row.stop) is row.past_pending


def test_the_table_covers_every_status() -> None:
    assert {row.status for row in ROWS} == set(ECS_TASK_STATUSES)


CONTAINERS = st.lists(
    st.builds(
        ContainerExit,
        name=st.sampled_from([None, "prefect", "sidecar"]),
        exit_code=st.none() | st.integers(-1, 255),
        reason=st.none() | st.text(max_size=20),
    ),
    max_size=3,
).map(tuple)


@given(
    status=st.sampled_from(ECS_TASK_STATUSES),
    containers=CONTAINERS,
    code=st.none() | st.text(max_size=12),
)
def test_only_a_stopped_task_crashes_always_with_a_message_and_never_past_pending(
    status: str, containers: tuple[ContainerExit, ...], code: str | None
) -> None:
    stop = StopDetail(stop_code=code, containers=containers)
    wants, message = wanted(status=status, stop=stop, task_arn=ARN)
    if wants == "crashed":
        assert status == "stopped"
    assert bool(message) == (wants is not None)
    # Past pending withdraws a pending proposal: never together with a proposal of its own.
    assert not (wants is not None and past_pending(status=status, stop=stop))
