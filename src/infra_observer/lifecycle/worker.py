"""The lifecycle worker: proposes states and writes a run's diagnosis and crash logs.

Sources hand it observations through `observe`, which never waits: what each flow run
wants is merged in a bounded map, and one task reads the runs' states in bulk, proposes
what their states admit (never forced: the server's orchestration decides) and writes
their logs. A pending proposal still in the map is withdrawn once its infrastructure is
past pending: by its turn, it would be stale. A failing API holds the work and retries it
with backoff; events keep flowing, since nothing here is on their path.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

import structlog

from infra_observer.config import LifecycleSettings
from infra_observer.errors import InfraObserverError, RejectedBatchError
from infra_observer.lifecycle.policy import INFRASTRUCTURE_PENDING, admits
from infra_observer.metrics import Metrics
from infra_observer.observations import CrashLogReader, Diagnosis, Level, Observation, Wanted
from infra_observer.prefect_api.client import PrefectApi
from infra_observer.prefect_api.logs import Logs
from infra_observer.prefect_api.orchestration import FlowRunState, Orchestration, SetStateStatus
from infra_observer.retry import Backoff

log = structlog.get_logger(__name__)

LOGGER_NAME = "infra-observer"
"""The logger name on every record written to a flow run's logs."""
PROPOSED_REMEMBERED_MAX = 10_000
_DIAGNOSES_PER_RUN_MAX = 8
_WAIT_MAX_SECONDS = 60.0
_LEVELS: dict[Level, int] = {"WARNING": 30, "ERROR": 40}
_STATES: dict[Wanted, tuple[str, str]] = {
    "pending": ("PENDING", INFRASTRUCTURE_PENDING),
    "crashed": ("CRASHED", "Crashed"),
}


@dataclass(slots=True)
class _Work:
    """What one flow run waits for, merged from its observations."""

    source: str
    wants: Wanted | None = None
    message: str = ""
    crash_logs: CrashLogReader | None = None
    diagnoses: list[Diagnosis] = field(default_factory=list)
    logs_due: bool = False
    """A crash was accepted and its logs are not written yet."""


class Lifecycle:
    """Acts on observations, one flow run at a time, in the order they first arrived."""

    def __init__(
        self,
        *,
        api: PrefectApi,
        metrics: Metrics,
        settings: LifecycleSettings,
        batch_size: int = 200,
        backoff: Backoff | None = None,
    ) -> None:
        self._orchestration = Orchestration(api)
        self._logs = Logs(api)
        self._metrics = metrics
        self._settings = settings
        switches: dict[Wanted, bool] = {
            "pending": settings.propose_pending,
            "crashed": settings.propose_crashed,
        }
        self._wanted = frozenset(kind for kind, on in switches.items() if on)
        self._batch_size = batch_size
        self._backoff = backoff or Backoff(initial=1.0, maximum=60.0)
        self._work: OrderedDict[uuid.UUID, _Work] = OrderedDict()
        self._proposed: OrderedDict[tuple[uuid.UUID, Wanted], None] = OrderedDict()
        self._arrived = asyncio.Event()

    @property
    def waiting(self) -> int:
        """Flow runs with work not done yet."""
        return len(self._work)

    def queued_proposal(self, flow_run_id: uuid.UUID) -> Wanted | None:
        """The proposal the run's queued work holds, not taken into a round yet."""
        work = self._work.get(flow_run_id)
        return None if work is None else work.wants

    def observe(self, observation: Observation) -> None:
        if observation.past_pending:
            self._withdraw_pending(observation.flow_run_id)
        wants = observation.wants if observation.wants in self._wanted else None
        if wants is not None and (observation.flow_run_id, wants) in self._proposed:
            wants = None
        diagnosis = observation.diagnosis if self._settings.diagnosis_logs else None
        if wants is None and diagnosis is None:
            return
        work = self._work.get(observation.flow_run_id)
        if work is None:
            if len(self._work) >= self._settings.queue_size:
                self._metrics.bound_hits.labels("lifecycle_queue").inc()
                log.warning("lifecycle_queue_full", flow_run_id=str(observation.flow_run_id))
                return
            work = self._work[observation.flow_run_id] = _Work(source=observation.source)
        _merge(work, observation, wants=wants, diagnosis=diagnosis)
        self._arrived.set()

    def _withdraw_pending(self, flow_run_id: uuid.UUID) -> None:
        """The infrastructure left pending before the run's turn: proposing it now would be
        stale. Not remembered as proposed: a later pending pod of the run may propose again."""
        work = self._work.get(flow_run_id)
        if work is None or work.wants != "pending":
            return
        self._metrics.proposals.labels(work.source, INFRASTRUCTURE_PENDING, "withdrawn").inc()
        work.wants, work.message, work.crash_logs = None, "", None
        if not work.diagnoses and not work.logs_due:
            del self._work[flow_run_id]

    async def run(self) -> None:
        """Work until cancelled."""
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            while self._work:
                batch = self._take()
                try:
                    await self._round(batch)
                except InfraObserverError as exc:
                    self._put_back(batch)
                    delay = self._backoff.next_delay()
                    self._metrics.lifecycle_retries.labels(type(exc).__name__).inc()
                    log.warning("lifecycle_api_failed", error=str(exc), retry_in=round(delay, 1))
                    await asyncio.sleep(delay)
                else:
                    self._backoff.reset()

    def _take(self) -> OrderedDict[uuid.UUID, _Work]:
        batch: OrderedDict[uuid.UUID, _Work] = OrderedDict()
        while self._work and len(batch) < self._batch_size:
            flow_run_id, work = self._work.popitem(last=False)
            batch[flow_run_id] = work
        return batch

    def _put_back(self, batch: OrderedDict[uuid.UUID, _Work]) -> None:
        """Unfinished work goes back first, merged with what arrived since."""
        for flow_run_id, work in reversed(batch.items()):
            newer = self._work.pop(flow_run_id, None)
            if newer is not None:
                work.diagnoses.extend(newer.diagnoses)
                if newer.wants is not None and work.wants != "crashed" and not work.logs_due:
                    work.wants, work.message = newer.wants, newer.message
                    work.crash_logs = newer.crash_logs
            self._work[flow_run_id] = work
            self._work.move_to_end(flow_run_id, last=False)

    async def _round(self, batch: OrderedDict[uuid.UUID, _Work]) -> None:
        """Everything the batch waits for; what is done is removed from it as it goes."""
        for flow_run_id, work in list(batch.items()):
            await self._write_diagnoses(flow_run_id, work)
            if work.logs_due:
                await self._forward_crash_logs(flow_run_id, work)
            if work.wants is None:
                del batch[flow_run_id]
        if not batch:
            return
        states = await self._orchestration.read_flow_runs(batch)
        for flow_run_id, work in list(batch.items()):
            await self._propose(flow_run_id, work, states.get(flow_run_id))
            if work.logs_due:
                await self._forward_crash_logs(flow_run_id, work)
            del batch[flow_run_id]

    async def _write_diagnoses(self, flow_run_id: uuid.UUID, work: _Work) -> None:
        while work.diagnoses:
            diagnosis = work.diagnoses[0]
            text = f"{diagnosis.summary}\nResolution: {diagnosis.resolution}"
            level = _LEVELS[diagnosis.level]
            await self._logs.write_logs(flow_run_id, [text], level=level, name=LOGGER_NAME)
            work.diagnoses.pop(0)
            self._metrics.diagnoses.labels(work.source, diagnosis.category).inc()
            log.info("diagnosis_logged", flow_run_id=str(flow_run_id), category=diagnosis.category)

    async def _propose(
        self, flow_run_id: uuid.UUID, work: _Work, state: FlowRunState | None
    ) -> None:
        assert work.wants is not None
        kind = work.wants
        if state is None or not admits(kind, state_type=state.type, state_name=state.name):
            outcome = "unknown_run" if state is None else "not_admitted"
            self._settle(flow_run_id, work, outcome)
            return
        state_type, name = _STATES[kind]
        try:
            answer = await self._orchestration.set_state(
                flow_run_id, type=state_type, name=name, message=work.message
            )
        except RejectedBatchError as exc:
            # The server refused the proposal's content: sending it again changes nothing.
            log.error("lifecycle_proposal_refused", flow_run_id=str(flow_run_id), error=str(exc))
            self._settle(flow_run_id, work, "failed")
            return
        if answer is None:  # deleted since it was read
            self._settle(flow_run_id, work, "unknown_run")
            return
        if answer.status is SetStateStatus.WAIT:
            self._propose_later(flow_run_id, work, delay=answer.delay_seconds)
            return
        self._settle(flow_run_id, work, answer.status.lower())
        log.debug(
            "lifecycle_proposed",
            flow_run_id=str(flow_run_id),
            state=name,
            answer=str(answer.status),
            reason=answer.reason,
        )
        # Only the replica whose proposal was accepted forwards the logs: one copy.
        accepted = answer.status is SetStateStatus.ACCEPT
        wanted_logs = work.crash_logs is not None and self._settings.crash_log_lines > 0
        work.logs_due = accepted and kind == "crashed" and wanted_logs

    async def _forward_crash_logs(self, flow_run_id: uuid.UUID, work: _Work) -> None:
        assert work.crash_logs is not None
        try:
            lines = await work.crash_logs(self._settings.crash_log_lines)
        except Exception as exc:  # whatever the reader met, the crash stands
            work.logs_due = False
            self._metrics.crash_logs_unread.labels(work.source).inc()
            log.warning(
                "crash_logs_unread",
                flow_run_id=str(flow_run_id),
                error=str(exc),
                exc_info=not isinstance(exc, InfraObserverError),
            )
            return
        if lines:
            await self._logs.write_logs(
                flow_run_id, lines, level=_LEVELS["ERROR"], name=LOGGER_NAME
            )
        work.logs_due = False
        self._metrics.log_lines_forwarded.labels(work.source).inc(len(lines))

    def _propose_later(self, flow_run_id: uuid.UUID, work: _Work, *, delay: float | None) -> None:
        """The server asked to propose again later: the proposal goes back after the delay."""
        assert work.wants is not None
        self._metrics.proposals.labels(work.source, _STATES[work.wants][1], "wait").inc()
        again = Observation(
            flow_run_id,
            work.source,
            wants=work.wants,
            message=work.message,
            crash_logs=work.crash_logs,
        )
        work.wants = None
        seconds = min(max(delay or 1.0, 1.0), _WAIT_MAX_SECONDS)
        asyncio.get_running_loop().call_later(seconds, self.observe, again)

    def _settle(self, flow_run_id: uuid.UUID, work: _Work, outcome: str) -> None:
        """The proposal is answered (or not to be made): counted, and not made again."""
        assert work.wants is not None
        kind, work.wants = work.wants, None
        self._metrics.proposals.labels(work.source, _STATES[kind][1], outcome).inc()
        self._proposed[(flow_run_id, kind)] = None
        if len(self._proposed) > PROPOSED_REMEMBERED_MAX:
            self._proposed.popitem(last=False)


def _merge(
    work: _Work, observation: Observation, *, wants: Wanted | None, diagnosis: Diagnosis | None
) -> None:
    """A crash outranks a pending state; a diagnosis is kept whatever is proposed."""
    if wants is not None and work.wants != "crashed":
        work.wants, work.message = wants, observation.message
        work.crash_logs = observation.crash_logs
    if diagnosis is not None and len(work.diagnoses) < _DIAGNOSES_PER_RUN_MAX:
        work.diagnoses.append(diagnosis)
