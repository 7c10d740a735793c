"""Telling the lifecycle layer of flow-run containers that crashed, once their exit is stored.

Used by the Docker loop only when `INFRA_OBSERVER_DOCKER_MARK_CRASHED` is on. An exit that
crashes its run (`lifecycle.py`) is told when its event's fate is known, without the loop
waiting for it: delivered, or found already stored (then without its diagnosis, which was
written when it was first stored: containers outlive their runs, and every start of the
observer lists them again). A rejected or undelivered event tells nothing.

Docker may record an exit before the kernel's OOM notification, so `State.OOMKilled` can
turn true only at the `oom` event after the `die`: an exit not told yet is then told as an
OOM kill instead, and one already told is followed by the OOM kill, a new diagnosis (once:
an exit told as an OOM kill is remembered as one).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import structlog

from infra_observer.errors import InputError, SourceError
from infra_observer.events.handoff import Outcome
from infra_observer.metrics import Metrics
from infra_observer.observations import FlowRunHandoff, Observation
from infra_observer.sources.base import Translation, report_input_error
from infra_observer.sources.docker.client import DockerClient
from infra_observer.sources.docker.lifecycle import ContainerExit, observation
from infra_observer.sources.docker.translate import ContainerState
from infra_observer.sources.docker.wire import DockerEvent, Inspected, event_exit_code

log = structlog.get_logger(__name__)

_EXITED: Final = frozenset({"exited", "dead"})
_STORED: Final = frozenset({Outcome.DELIVERED, Outcome.DUPLICATE})
EXITS_REMEMBERED: Final = 4096
"""Recent exits remembered for their late OOM kill, which follows within moments."""


@dataclass(slots=True)
class _Exit:
    """An exit that crashes its run: told once its event's fate is known."""

    observation: Observation
    settled: bool = False
    """Its event's fate is known (and the exit told, if it was stored)."""

    @property
    def oom_killed(self) -> bool:
        diagnosis = self.observation.diagnosis
        return diagnosis is not None and diagnosis.category == "OOMKilled"


class CrashReports:
    """What the Docker loop tells the lifecycle layer of exits, and the crash logs' reader."""

    def __init__(
        self,
        *,
        flow_runs: FlowRunHandoff,
        metrics: Metrics,
        client: Callable[[], DockerClient | None],
        source: str,
    ) -> None:
        """`client`: the loop's connection to the daemon, None while it has none."""
        self._flow_runs = flow_runs
        self._metrics = metrics
        self._client = client
        self._source = source
        self._exits: OrderedDict[str, _Exit] = OrderedDict()

    def changed(
        self,
        result: Translation[ContainerState],
        *,
        inspected: Inspected | None,
        event: DockerEvent | None,
        stored: asyncio.Future[Outcome] | None,
    ) -> None:
        """After a change was handed over; `stored`: the fate of its last event, if any."""
        state = result.state
        if state is None:
            self._exits.pop(result.key, None)  # removed: no OOM kill can follow
            return
        if state.status not in _EXITED:
            return
        if stored is None:
            if event is not None and event.action == "oom" and inspected is not None:
                self._oom_after_exit(state, inspected)
            return
        told = self._observation(state, inspected=inspected, event=event)
        if told is not None:
            entry = self._remember(state.container_id, _Exit(told))
            stored.add_done_callback(lambda done: self._settled(entry, done))

    def _observation(
        self, state: ContainerState, *, inspected: Inspected | None, event: DockerEvent | None
    ) -> Observation | None:
        if inspected is not None:
            ended = _ended(state, inspected.exit_code, oom_killed=inspected.oom_killed)
            return self._told(ended, state, tty=inspected.tty)
        if event is None:
            return None
        try:
            # Removed before it could be inspected: its `die` still says how it exited.
            code = event_exit_code(event)
        except InputError as exc:
            report_input_error(
                self._metrics,
                source=self._source,
                kind="event",
                detail=str(exc),
                container_id=state.container_id[:12],
            )
            return None
        return self._told(_ended(state, code, oom_killed=False), state, tty=False)

    def _told(
        self, ended: ContainerExit, state: ContainerState, *, tty: bool
    ) -> Observation | None:
        container_id = state.container_id
        return observation(
            ended,
            labels=state.labels,
            crash_logs=lambda lines: self.read_logs(container_id, tty=tty, lines=lines),
        )

    def _remember(self, container_id: str, entry: _Exit) -> _Exit:
        self._exits[container_id] = entry
        self._exits.move_to_end(container_id)
        if len(self._exits) > EXITS_REMEMBERED:
            self._exits.popitem(last=False)
        return entry

    def _settled(self, entry: _Exit, done: asyncio.Future[Outcome]) -> None:
        entry.settled = True
        if done.cancelled() or done.exception() is not None or done.result() not in _STORED:
            return
        told = entry.observation
        if done.result() is Outcome.DUPLICATE:
            told = dataclasses.replace(told, diagnosis=None)
        self._flow_runs.observe(told)

    def _oom_after_exit(self, state: ContainerState, inspected: Inspected) -> None:
        entry = self._exits.get(state.container_id)
        if not inspected.oom_killed or (entry is not None and entry.oom_killed):
            return
        ended = _ended(state, inspected.exit_code, oom_killed=True)
        told = self._told(ended, state, tty=inspected.tty)
        if told is None:
            return
        if entry is not None and not entry.settled:
            entry.observation = told  # told as an OOM kill once its event is stored
            return
        log.debug("docker_oom_kill_after_exit", container_id=state.container_id[:12])
        self._remember(state.container_id, _Exit(told, settled=True))
        self._flow_runs.observe(told)

    async def read_logs(self, container_id: str, *, tty: bool, lines: int) -> Sequence[str]:
        """The container's last lines, through the loop's connection."""
        client = self._client()
        if client is None:
            raise SourceError("the Docker source is stopped: no connection to read logs on")
        return await client.logs(container_id, tail=lines, tty=tty)


def _ended(state: ContainerState, exit_code: int | None, *, oom_killed: bool) -> ContainerExit:
    name = state.name or state.container_id[:12]
    return ContainerExit(name, state.status, exit_code, oom_killed=oom_killed)
