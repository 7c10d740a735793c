"""What a container's exit asks of its flow run: crashed, and why.

Pure functions over what `wire.py` read of the inspected container (or, for a container
already removed, of its `die` event). A container whose status is `exited` or `dead` crashes
its run when it exited non-zero or was OOM-killed. A container that will run again
(`restarting`, a restart policy) is no crash, as a pod its Job will retry is none.

Only consulted when `INFRA_OBSERVER_DOCKER_MARK_CRASHED` is on: Prefect's Docker worker
marks these runs crashed itself while it watches its containers.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from infra_observer.observations import CrashLogReader, Diagnosis, Observation

DockerCategory = Literal["OOMKilled", "NonZeroExit"]

_FINAL_STATUSES: Final = frozenset({"exited", "dead"})
# In the order the translation reads them: the first one set is the flow-run id.
_FLOW_RUN_KEYS: Final = ("prefect.io/flow-run-id", "io.prefect.flow-run-id")

RESOLUTIONS: Final[Mapping[DockerCategory, str]] = {
    "OOMKilled": (
        "The container used more memory than its limit: raise `mem_limit` (and "
        "`memswap_limit`) in the work pool's job variables, or reduce the flow's memory use."
    ),
    "NonZeroExit": (
        "The flow's process exited with an error: read the container's logs "
        "(`docker logs <container>`) for the cause."
    ),
}


@dataclass(frozen=True, slots=True)
class ContainerExit:
    """What the crash is decided on: one container's status and how it last exited."""

    container: str
    """The container's name, else its short id."""
    status: str
    exit_code: int | None
    oom_killed: bool = False


def observation(
    ended: ContainerExit,
    *,
    labels: Mapping[str, str],
    crash_logs: CrashLogReader,
    with_diagnosis: bool = True,
) -> Observation | None:
    """The crash the exit gives the container's flow run; None when it gives none.

    `with_diagnosis=False` leaves the diagnosis out (an exit already told to the run).
    """
    if not crashed(ended):
        return None
    flow_run_id = _flow_run_id(labels)
    if flow_run_id is None:
        return None
    return Observation(
        flow_run_id,
        "docker",
        wants="crashed",
        message=message(ended),
        diagnosis=explain(ended) if with_diagnosis else None,
        crash_logs=crash_logs,
    )


def crashed(ended: ContainerExit) -> bool:
    """Exited or dead, and non-zero or OOM-killed; an unknown exit code is no failure."""
    failed = ended.oom_killed or ended.exit_code not in (None, 0)
    return failed and ended.status in _FINAL_STATUSES


def message(ended: ContainerExit) -> str:
    """The proposed Crashed state's message, naming the container and how it ended."""
    name = f"Docker container {ended.container}"
    if ended.oom_killed:
        return f"{name} was OOM-killed ({_code(ended)})."
    if ended.status == "dead":
        return f"{name} is dead ({_code(ended)})."
    return f"{name} exited with code {ended.exit_code}."


def diagnose(ended: ContainerExit) -> DockerCategory | None:
    """The category of what went wrong; OOM-killed wins over the exit code it caused."""
    if not crashed(ended):
        return None
    return "OOMKilled" if ended.oom_killed else "NonZeroExit"


def explain(ended: ContainerExit) -> Diagnosis | None:
    """`diagnose`, with the level, a one-line summary and the resolution."""
    category = diagnose(ended)
    if category is None:
        return None
    if category == "OOMKilled":
        summary = f"Container {ended.container} ran out of memory and was killed ({_code(ended)})"
    else:
        summary = f"Container {ended.container} exited with code {ended.exit_code}"
    return Diagnosis(category, "ERROR", summary, RESOLUTIONS[category])


def _code(ended: ContainerExit) -> str:
    return "no exit code" if ended.exit_code is None else f"exit code {ended.exit_code}"


def _flow_run_id(labels: Mapping[str, str]) -> uuid.UUID | None:
    for key in _FLOW_RUN_KEYS:
        value = labels.get(key)
        if value:
            try:
                return uuid.UUID(value)
            except ValueError:
                return None
    return None
