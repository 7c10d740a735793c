"""The ECS task diagnosis: every category from `stopCode`, `stoppedReason` and the
containers' exits, what is no diagnosis, and what must never change the category (the text
after ECS's error name). docs/sources/ecs.md carries the same table."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra_observer.sources.ecs.diagnosis import (
    RESOLUTIONS,
    ContainerExit,
    EcsCategory,
    StopDetail,
    diagnose,
    explain,
)

PULL_REASON = (
    "CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to "
    "resolve ref docker.io/library/nope:latest: not found"
)
OOM_REASON = "OutOfMemoryError: Container killed due to memory usage"


def flow(*, exit_code: int | None = None, reason: str | None = None) -> ContainerExit:
    """The flow run's container, as ECS reports it in a state change."""
    return ContainerExit(name="prefect", exit_code=exit_code, reason=reason)


@dataclass(frozen=True, kw_only=True)
class Case:
    """One row: a change's stop detail and the category it must give (None: no diagnosis)."""

    name: str
    detail: StopDetail
    category: EcsCategory | None


CASES = [
    Case(
        name="image pull, task reason",
        detail=StopDetail(
            stop_code="TaskFailedToStart", stopped_reason=PULL_REASON, containers=(flow(),)
        ),
        category="CannotPullContainerError",
    ),
    Case(
        name="image pull, container reason",
        detail=StopDetail(stop_code="TaskFailedToStart", containers=(flow(reason=PULL_REASON),)),
        category="CannotPullContainerError",
    ),
    Case(
        name="out of memory",
        detail=StopDetail(
            stop_code="EssentialContainerExited",
            stopped_reason="Essential container in task exited",
            containers=(flow(exit_code=137, reason=OOM_REASON),),
        ),
        category="OutOfMemoryError",
    ),
    Case(
        name="failed to start",
        detail=StopDetail(
            stop_code="TaskFailedToStart",
            stopped_reason="ResourceInitializationError: unable to pull secrets or registry "
            "auth: execution resource retrieval failed",
        ),
        category="TaskFailedToStart",
    ),
    Case(
        name="essential container failed",
        detail=StopDetail(
            stop_code="EssentialContainerExited",
            stopped_reason="Essential container in task exited",
            containers=(flow(exit_code=1),),
        ),
        category="EssentialContainerExited",
    ),
    Case(
        name="a container failed, task still running",
        detail=StopDetail(containers=(flow(), ContainerExit(name="sidecar", exit_code=2))),
        category="NonZeroExit",
    ),
    Case(
        name="flow run completed",
        detail=StopDetail(
            stop_code="EssentialContainerExited",
            stopped_reason="Essential container in task exited",
            containers=(flow(exit_code=0),),
        ),
        category=None,
    ),
    Case(
        name="cancelled by a user",
        detail=StopDetail(
            stop_code="UserInitiated",
            stopped_reason="Task stopped by user",
            containers=(flow(exit_code=143),),
        ),
        category=None,
    ),
    Case(
        name="stopped by the service",
        detail=StopDetail(stop_code="ServiceSchedulerInitiated", containers=(flow(exit_code=137),)),
        category=None,
    ),
    Case(
        name="spot interruption",
        detail=StopDetail(stop_code="SpotInterruption", containers=(flow(exit_code=137),)),
        category=None,
    ),
    Case(name="running", detail=StopDetail(containers=(flow(),)), category=None),
    Case(name="nothing known", detail=StopDetail(), category=None),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_category(case: Case) -> None:
    assert diagnose(case.detail) == case.category
    explained = explain(case.detail)
    if case.category is None:
        assert explained is None
        return
    assert explained is not None
    assert explained.category == case.category
    assert (explained.level, explained.resolution) == RESOLUTIONS[case.category]
    assert explained.summary
    assert "\n" not in explained.summary


def test_every_category_has_a_case() -> None:
    assert {case.category for case in CASES} - {None} == set(RESOLUTIONS)


def test_summaries_are_built_from_the_change() -> None:
    killed = flow(exit_code=137, reason=OOM_REASON)
    oom = explain(StopDetail(stop_code="EssentialContainerExited", containers=(killed,)))
    assert oom is not None
    assert oom.summary == f"Container prefect ran out of memory (exit code 137): {OOM_REASON}"
    pull = explain(StopDetail(stop_code="TaskFailedToStart", stopped_reason=PULL_REASON))
    assert pull is not None
    assert pull.summary.startswith("Task could not start (CannotPullContainerError): ")
    exited = flow(exit_code=3)
    failed = explain(StopDetail(stop_code="EssentialContainerExited", containers=(exited,)))
    assert failed is not None
    assert failed.summary == "Container prefect exited with code 3 (EssentialContainerExited)"


_texts = st.none() | st.text(max_size=30)
_exits = st.builds(
    ContainerExit,
    name=_texts,
    exit_code=st.none() | st.integers(-1, 255),
    reason=_texts | st.sampled_from([PULL_REASON, OOM_REASON]),
)
_details = st.builds(
    StopDetail,
    stop_code=_texts
    | st.sampled_from(["TaskFailedToStart", "EssentialContainerExited", "UserInitiated"]),
    stopped_reason=_texts | st.just(PULL_REASON),
    containers=st.lists(_exits, max_size=3).map(tuple),
)


@given(detail=_details)
def test_any_change_gives_a_category_or_none_without_raising(detail: StopDetail) -> None:
    category = diagnose(detail)
    assert category is None or category in RESOLUTIONS
    explained = explain(detail)
    assert (explained.category if explained else None) == category


@given(tail=st.text(max_size=80), code=st.integers(1, 255))
def test_text_after_the_error_name_does_not_change_the_category(tail: str, code: int) -> None:
    pull = StopDetail(
        stop_code="TaskFailedToStart", stopped_reason=f"CannotPullContainerError:{tail}"
    )
    assert diagnose(pull) == "CannotPullContainerError"
    oom = StopDetail(containers=(flow(exit_code=code, reason=f"OutOfMemoryError:{tail}"),))
    assert diagnose(oom) == "OutOfMemoryError"
