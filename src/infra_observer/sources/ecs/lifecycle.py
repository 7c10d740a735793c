"""What an ECS task's state change asks of its flow run: still pending, past pending, or
crashed.

Pure functions over the change's status and stop detail. A task PROVISIONING or PENDING
keeps its run pending. A STOPPED task crashes its run when the `prefect` container (every
container, when none is named so) exited non-zero or without an exit code, or when the task
has no containers at all: it never ran and never will, whatever its stop code says. A task
launched (ACTIVATING to DEPROVISIONING), or STOPPED without crashing its run, is past
pending: a pending proposal still queued for its run is stale.
"""

from __future__ import annotations

import uuid
from typing import Final

from infra_observer.observations import CrashLogReader, Observation, Wanted
from infra_observer.sources.base import one_line
from infra_observer.sources.ecs.diagnosis import ContainerExit, StopDetail, explain

PREFECT_CONTAINER: Final = "prefect"
"""The container that runs the flow in the task definitions Prefect's ECS worker writes."""
_PENDING: Final = frozenset({"provisioning", "pending"})
# Launched and not stopped yet. DELETED is left out: a task gone says nothing of whether it ran.
_LAUNCHED: Final = frozenset(
    {"activating", "running", "deactivating", "stopping", "deprovisioning"}
)


def observation(
    *,
    flow_run_id: uuid.UUID,
    status: str,
    stop: StopDetail,
    task_arn: str,
    crash_logs: CrashLogReader,
) -> Observation | None:
    """What the change tells the lifecycle layer; None when nothing."""
    wants, message = wanted(status=status, stop=stop, task_arn=task_arn)
    return Observation.of_change(
        flow_run_id,
        "ecs",
        wants=wants,
        message=message,
        diagnosis=explain(stop) if status == "stopped" else None,
        crash_logs=crash_logs,
        past_pending=past_pending(status=status, stop=stop),
    )


def wanted(*, status: str, stop: StopDetail, task_arn: str) -> tuple[Wanted | None, str]:
    """The state the change implies for the run, and the message to propose it with."""
    task = f"ECS task {task_arn.rsplit('/', 1)[-1]}"
    if status in _PENDING:
        return "pending", f"{task} is {status.upper()}."
    if status != "stopped":
        return None, ""
    why = _stop_words(stop)
    if not stop.containers:
        return "crashed", f"{task} stopped before any container ran{why}."
    failed = _failed(stop.containers)
    if not failed:
        return None, ""
    exits = ", ".join(_exit_words(container) for container in failed)
    return "crashed", f"{task} stopped: {exits}{why}."


def past_pending(*, status: str, stop: StopDetail) -> bool:
    """True when the task left PENDING without crashing its run."""
    if status == "stopped":
        return bool(stop.containers) and not _failed(stop.containers)
    return status in _LAUNCHED


def _failed(containers: tuple[ContainerExit, ...]) -> list[ContainerExit]:
    """The flow's containers that exited non-zero or without an exit code."""
    return [c for c in _flow_containers(containers) if c.exit_code != 0]


def _flow_containers(containers: tuple[ContainerExit, ...]) -> tuple[ContainerExit, ...]:
    named = tuple(c for c in containers if c.name == PREFECT_CONTAINER)
    return named or containers


def _exit_words(container: ContainerExit) -> str:
    name = container.name or "a container"
    if container.exit_code is None:
        said = f" ({one_line(container.reason)})" if container.reason else ""
        return f"{name} has no exit code{said}"
    return f"{name} exited with code {container.exit_code}"


def _stop_words(stop: StopDetail) -> str:
    parts = [f"stop code {stop.stop_code}"] if stop.stop_code else []
    if stop.stopped_reason:
        parts.append(one_line(stop.stopped_reason))
    return f" ({'; '.join(parts)})" if parts else ""
