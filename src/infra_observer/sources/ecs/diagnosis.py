"""What went wrong with an ECS task, from its state change: a category, and for logging a
summary and a resolution.

Pure functions over what `translate.parse_message` read of the change's `detail`:
`stopCode`, `stoppedReason` and each container's exit code and reason. The category comes
from codes and the error names that start ECS's reasons (`CannotPullContainerError: ...`,
`OutOfMemoryError: ...`), never from the rest of their text, which names images, hosts and
retry counts. Precedence when several apply, first wins (docs/sources/ecs.md has the table):

1. CannotPullContainerError: the task's or a container's reason starts with it.
2. OutOfMemoryError: a container's reason starts with it.
3. TaskFailedToStart: `stopCode` says so (any other reason the task could not start).
4. EssentialContainerExited: `stopCode` says so and a container exited non-zero. A flow
   run's task ends this way when its container exits 0 too: that is no diagnosis.
5. NonZeroExit: no `stopCode` yet and a container exited non-zero (a task still running,
   or whose stop is not reported yet).

A task stopped by a user or a service (`UserInitiated`, `ServiceSchedulerInitiated`,
`SpotInterruption`, `TerminationNotice`) has no diagnosis: its containers' exit codes come
from being stopped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from infra_observer.sources.base import Diagnosis, Level, one_line

EcsCategory = Literal[
    "CannotPullContainerError",
    "OutOfMemoryError",
    "TaskFailedToStart",
    "EssentialContainerExited",
    "NonZeroExit",
]

PULL_ERROR: Final = "CannotPullContainerError"
OUT_OF_MEMORY: Final = "OutOfMemoryError"


@dataclass(frozen=True, slots=True)
class ContainerExit:
    """One container of the change: its name, exit code and reason, each when reported."""

    name: str | None = None
    exit_code: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class StopDetail:
    """What the diagnosis reads of a task state change."""

    stop_code: str | None = None
    stopped_reason: str | None = None
    containers: tuple[ContainerExit, ...] = ()


@dataclass(frozen=True, slots=True)
class _Finding:
    category: EcsCategory
    container: ContainerExit | None = None


def diagnose(detail: StopDetail) -> EcsCategory | None:
    """The category of what went wrong with the task; None when nothing did (yet)."""
    found = _find(detail)
    return None if found is None else found.category


def explain(detail: StopDetail) -> Diagnosis | None:
    """`diagnose`, with the level, a one-line summary and the resolution."""
    found = _find(detail)
    if found is None:
        return None
    level, resolution = RESOLUTIONS[found.category]
    return Diagnosis(found.category, level, one_line(_summary(found, detail)), resolution)


def _find(detail: StopDetail) -> _Finding | None:
    containers = detail.containers
    pulled = _first_reason(containers, PULL_ERROR)
    if pulled is not None or _starts(detail.stopped_reason, PULL_ERROR):
        return _Finding("CannotPullContainerError", pulled)
    if oom := _first_reason(containers, OUT_OF_MEMORY):
        return _Finding("OutOfMemoryError", oom)
    if detail.stop_code == "TaskFailedToStart":
        return _Finding("TaskFailedToStart")
    failed = next((c for c in containers if c.exit_code not in (None, 0)), None)
    if failed is None or detail.stop_code not in (None, "EssentialContainerExited"):
        return None  # stopped by a user or a service, or no failed exit
    if detail.stop_code is None:
        return _Finding("NonZeroExit", failed)
    return _Finding("EssentialContainerExited", failed)


def _starts(reason: str | None, error: str) -> bool:
    return reason is not None and reason.startswith(error)


def _first_reason(containers: Sequence[ContainerExit], error: str) -> ContainerExit | None:
    return next((c for c in containers if _starts(c.reason, error)), None)


RESOLUTIONS: Final[Mapping[EcsCategory, tuple[Level, str]]] = {
    "CannotPullContainerError": (
        "ERROR",
        "Check the image name and tag, the task execution role's permission to pull it "
        "(ECR), and that the task's subnets reach the registry (NAT gateway or VPC "
        "endpoints).",
    ),
    "OutOfMemoryError": (
        "ERROR",
        "The container used more memory than it was given: raise the task's or container's "
        "memory in the work pool's task definition, or reduce the flow's memory use.",
    ),
    "TaskFailedToStart": (
        "ERROR",
        "ECS could not start the task: read the stopped reason (secrets, log "
        "configuration, network interfaces and the execution role are the usual causes).",
    ),
    "EssentialContainerExited": (
        "ERROR",
        "An essential container exited with an error, which stopped the task: read that "
        "container's logs for the cause.",
    ),
    "NonZeroExit": (
        "WARNING",
        "A container exited with an error: read its logs for the cause.",
    ),
}


def _summary(found: _Finding, detail: StopDetail) -> str:
    container = found.container or ContainerExit()
    name, code = container.name or "unknown", container.exit_code
    if found.category in ("CannotPullContainerError", "TaskFailedToStart"):
        reason = container.reason or detail.stopped_reason or "no reason given"
        return f"Task could not start ({found.category}): {reason}"
    if found.category == "OutOfMemoryError":
        return f"Container {name} ran out of memory (exit code {code}): {container.reason}"
    return f"Container {name} exited with code {code} ({detail.stop_code or 'task not stopped'})"
