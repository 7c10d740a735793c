"""The flow runs' Jobs of one scope: their list-watch, and the crash each failed Job reports.

A Job failing (the Job controller's rules, `jobs.py`) or deleted before it succeeded crashes
its flow run; the message adds the last diagnosis the pod watch saw for that run (told a
moment later, so that the pod's own change has arrived). A Job
already failed when listed is reported too: its run's state decides, and the lifecycle
layer reads states in bulk. Only active Jobs are remembered (to report one deleted while
no watch was open), and a bounded number of reported ones (so that a failed Job's later
changes say nothing more).
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import structlog

from infra_observer.config import KubernetesSettings
from infra_observer.errors import InputError
from infra_observer.kubernetes_api import LIST_PAGE_SIZE, Collection, ListWatch, in_shard, jobs_path
from infra_observer.metrics import Metrics
from infra_observer.observations import Diagnosis, FlowRunHandoff, Observation
from infra_observer.sources.base import report_input_error
from infra_observer.sources.kubernetes.crash_logs import CrashLogs
from infra_observer.sources.kubernetes.jobs import JobView, crash_message, read_job
from infra_observer.sources.kubernetes.translate import FLOW_RUN_LABEL
from infra_observer.sources.kubernetes.wire import JobDecoder
from infra_observer.sources.skips import SkipLog, flow_run_skip

log = structlog.get_logger(__name__)

SOURCE: Final = "kubernetes"
DIAGNOSES_REMEMBERED_MAX: Final = 10_000
REPORTED_REMEMBERED_MAX: Final = 10_000
DIAGNOSIS_GRACE_SECONDS: Final = 1.0
"""How long a Job's crash waits for its pod's change to arrive on the pod watch."""


class LastDiagnoses:
    """Flow-run id -> the last diagnosis its pods had, for a Job's crash message (bounded)."""

    def __init__(self, limit: int = DIAGNOSES_REMEMBERED_MAX) -> None:
        self._limit = limit
        self._by_run: OrderedDict[uuid.UUID, Diagnosis] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_run)

    def remember(self, flow_run_id: uuid.UUID, diagnosis: Diagnosis) -> None:
        self._by_run[flow_run_id] = diagnosis
        self._by_run.move_to_end(flow_run_id)
        if len(self._by_run) > self._limit:
            self._by_run.popitem(last=False)

    def get(self, flow_run_id: uuid.UUID) -> Diagnosis | None:
        return self._by_run.get(flow_run_id)


@dataclass(frozen=True, slots=True)
class _ActiveJob:
    flow_run_id: uuid.UUID
    job: JobView


def jobs_of(
    namespace: str | None, *, label_selector: str, decoder: JobDecoder | None = None
) -> Collection:
    """The labelled Jobs of a scope, decoded only as far as `read_job` reads them."""
    decoder = decoder or JobDecoder()
    return Collection(
        path=jobs_path(namespace),
        resource="jobs",
        namespace=namespace,
        label_selector=label_selector,
        decode_line=decoder.watch_line,
        decode_list=decoder.job_list,
    )


class JobWatch:
    """The Jobs of one scope: the list-watch's handler, reporting crashes to the lifecycle."""

    def __init__(
        self,
        *,
        collection: Collection,
        settings: KubernetesSettings,
        metrics: Metrics,
        flow_runs: FlowRunHandoff,
        diagnoses: LastDiagnoses,
        crash_logs: CrashLogs,
        on_synced: Callable[[], None] | None = None,
        list_page_size: int = LIST_PAGE_SIZE,
    ) -> None:
        self.active: dict[str, _ActiveJob] = {}
        """uid -> the Job, while it runs: released once it finished or is gone."""
        self.synced = False
        self.list_watch = ListWatch(
            collection=collection,
            handler=self,
            settings=settings,
            metrics=metrics,
            source=SOURCE,
            page_size=list_page_size,
        )
        self._scope = collection.label
        self._shards, self._shard = settings.shard_count, settings.shard_index
        self._metrics = metrics
        self._flow_runs = flow_runs
        self._diagnoses = diagnoses
        self._crash_logs = crash_logs
        self._on_synced = on_synced
        self._reported: OrderedDict[str, None] = OrderedDict()
        self._seen: set[str] = set()
        self._skips = SkipLog(source=SOURCE, metrics=metrics)

    # --- the list-watch's handler -----------------------------------------------------

    def relisting(self) -> None:
        self._seen = set()

    async def listed(self, objects: list[Any]) -> None:
        for job in objects:
            uid = await self.changed("LISTED", job)
            if uid is not None:
                self._seen.add(uid)

    def resynced(self, resource_version: str) -> None:
        """Active Jobs the list did not hold were deleted while no watch was open."""
        seen, self._seen = self._seen, set()
        for uid in [uid for uid in self.active if uid not in seen]:
            gone = self.active.pop(uid)
            message = crash_message(gone.job, deleted=True)
            self._crashed(gone.job, flow_run_id=gone.flow_run_id, message=message)
        log.info("jobs_listed", scope=self._scope, jobs=len(seen), active=len(self.active))
        if not self.synced:
            self.synced = True
            if self._on_synced is not None:
                self._on_synced()

    def malformed(self, detail: str) -> None:
        self._input_error("stream", detail)

    async def changed(self, kind: str, obj: Any) -> str | None:
        """Read one Job and report its crash; the Job's uid (None when unreadable)."""
        try:
            job = read_job(obj)
        except InputError as exc:
            self._input_error("job", str(exc))
            return None
        if self._shards > 1 and not in_shard(job.uid, count=self._shards, index=self._shard):
            return None
        deleted = kind == "DELETED"
        flow_run_id = self._flow_run_id(job, deleted=deleted)
        if flow_run_id is None:
            return job.uid
        if job.outcome == "active" and not deleted:
            self.active[job.uid] = _ActiveJob(flow_run_id, job)
            return job.uid
        self.active.pop(job.uid, None)
        if job.uid in self._reported:
            if deleted:
                del self._reported[job.uid]  # gone for good: nothing more will come of it
            return job.uid
        message = crash_message(job, deleted=deleted)
        if message is not None:
            self._crashed(job, flow_run_id=flow_run_id, message=message)
        return job.uid

    def _flow_run_id(self, job: JobView, *, deleted: bool) -> uuid.UUID | None:
        try:
            return uuid.UUID(job.labels.get(FLOW_RUN_LABEL, ""))
        except ValueError:
            skip = flow_run_skip(job.labels, keys=(FLOW_RUN_LABEL,))
            self._skips.report(job.uid, skip, job=f"{job.namespace}/{job.name}")
            if deleted:
                self._skips.forget(job.uid)
            return None

    def _crashed(self, job: JobView, *, flow_run_id: uuid.UUID, message: str | None) -> None:
        if message is None:
            return
        self._reported[job.uid] = None
        if len(self._reported) > REPORTED_REMEMBERED_MAX:
            self._reported.popitem(last=False)
        log.info("job_crashed", job=f"{job.namespace}/{job.name}", flow_run_id=str(flow_run_id))
        # The Job controller counts a pod's failure as soon as it sees it, so the Job's
        # change may arrive before the pod's on the other watch: the message is made a
        # moment later, with the diagnosis the pod watch has seen by then.
        tell = functools.partial(self._tell_crash, job, flow_run_id=flow_run_id, message=message)
        asyncio.get_running_loop().call_later(DIAGNOSIS_GRACE_SECONDS, tell)

    def _tell_crash(self, job: JobView, *, flow_run_id: uuid.UUID, message: str) -> None:
        diagnosis = self._diagnoses.get(flow_run_id)
        why = (
            f" Last pod diagnosis ({diagnosis.category}): {diagnosis.summary.rstrip('.')}."
            if diagnosis is not None
            else ""
        )
        self._flow_runs.observe(
            Observation(
                flow_run_id,
                SOURCE,
                wants="crashed",
                message=f"{message.rstrip('.')}.{why}",
                crash_logs=self._crash_logs.of_job(job.namespace, job.uid),
            )
        )

    def _input_error(self, kind: str, detail: str) -> None:
        report_input_error(
            self._metrics, source=SOURCE, kind=kind, detail=detail, scope=self._scope
        )
