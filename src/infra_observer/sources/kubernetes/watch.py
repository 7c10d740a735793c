"""The pods of one scope: their list-watch, and what is remembered of each pod it reports.

One scope is the whole cluster or one configured namespace. The list-watch machinery
(`infra_observer.kubernetes_api.listwatch`) hands over every listed pod and every change;
here each is translated against the pod's remembered state, the state kept, and the events
handed to the emitter. Pods are read as plain JSON straight off the response, decoded only
as far as the fields `translate` reads (see `wire.py`). With the lifecycle layer on, a change
that brings events in any phase but Unknown, or of the diagnosis category, is told to it once
the change's events are handed over (`lifecycle.pod_observation`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from infra_observer.config import KubernetesSettings
from infra_observer.errors import InputError
from infra_observer.events.handoff import EventHandoff
from infra_observer.kubernetes_api import (
    LIST_PAGE_SIZE,
    Collection,
    ListWatch,
    describe,
    in_shard,
    json_get,
    pods_path,
    where,
)
from infra_observer.metrics import Metrics
from infra_observer.observations import FlowRunHandoff
from infra_observer.sources.base import Translation, report_input_error
from infra_observer.sources.kubernetes.crash_logs import CrashLogs
from infra_observer.sources.kubernetes.diagnosis import explain
from infra_observer.sources.kubernetes.job_watch import LastDiagnoses
from infra_observer.sources.kubernetes.lifecycle import owner_kinds, pod_observation
from infra_observer.sources.kubernetes.translate import FLOW_RUN_LABEL, PodState, translate
from infra_observer.sources.kubernetes.wire import Decoder, owner_references
from infra_observer.sources.skips import SkipLog

log = structlog.get_logger(__name__)

SOURCE = "kubernetes"
# The phases a change into may ask something of the run: pending, a bare pod's crash, or
# past pending (a pending proposal still queued is withdrawn).
_TOLD_PHASES = frozenset({"Pending", "Running", "Succeeded", "Failed"})


def label_selector(settings: KubernetesSettings) -> str:
    """Applied by the server, so pods without the label never reach this process."""
    extra = settings.label_selector.strip()
    return f"{FLOW_RUN_LABEL},{extra}" if extra else FLOW_RUN_LABEL


@dataclass(frozen=True, slots=True)
class Scope:
    """Where one loop lists and watches: a namespace, or None for the whole cluster."""

    namespace: str | None

    @property
    def label(self) -> str:
        return self.namespace if self.namespace is not None else "*"

    @property
    def where(self) -> str:
        return where(self.namespace)


def scopes_of(settings: KubernetesSettings) -> list[Scope]:
    namespaces = list(dict.fromkeys(ns for ns in settings.namespaces if ns))
    return [Scope(ns) for ns in namespaces] if namespaces else [Scope(None)]


def pods_of(scope: Scope, *, settings: KubernetesSettings, decoder: Decoder) -> Collection:
    """The labelled pods of `scope`, decoded only as far as `translate` reads them."""
    return Collection(
        path=pods_path(scope.namespace),
        resource="pods",
        namespace=scope.namespace,
        label_selector=label_selector(settings),
        decode_line=decoder.watch_line,
        decode_list=decoder.pod_list,
    )


class ScopeWatch:
    """The pods of one scope: the list-watch's handler, with the state of each pod."""

    def __init__(
        self,
        *,
        scope: Scope,
        settings: KubernetesSettings,
        handoff: EventHandoff,
        metrics: Metrics,
        on_synced: Callable[[], None] | None = None,
        list_page_size: int = LIST_PAGE_SIZE,
        flow_runs: FlowRunHandoff | None = None,
        diagnoses: LastDiagnoses | None = None,
        crash_logs: CrashLogs | None = None,
    ) -> None:
        """`flow_runs`: the lifecycle layer (None: off); `diagnoses`: where each run's last
        diagnosis is kept for its Job's crash message; `crash_logs`: the source's readers."""
        self.scope = scope
        self.pods: dict[str, PodState] = {}
        """uid -> state; one small entry per live labelled pod, released on deletion."""
        self.synced = False
        self.list_watch = ListWatch(
            collection=pods_of(scope, settings=settings, decoder=Decoder()),
            handler=self,
            settings=settings,
            metrics=metrics,
            source=SOURCE,
            page_size=list_page_size,
        )
        self._id_scheme = settings.event_id_scheme
        self._shards = settings.shard_count
        self._shard = settings.shard_index
        self._handoff = handoff
        self._metrics = metrics
        self._on_synced = on_synced
        self._flow_runs = flow_runs
        self._diagnoses = diagnoses
        self._crash_logs = crash_logs or CrashLogs()
        self._seen: set[str] = set()
        self._skips = SkipLog(source=SOURCE, metrics=metrics)
        # For the lines of each pod change: bound once, as the module's lazy logger binds
        # anew on every call, and skipped with their arguments below debug.
        self._changes_log = log.bind()
        self._log_changes: bool = self._changes_log.is_enabled_for(logging.DEBUG)

    # --- the list-watch's handler -----------------------------------------------------

    def relisting(self) -> None:
        self._seen = set()

    async def listed(self, objects: list[Any]) -> None:
        for index, pod in enumerate(objects):
            objects[index] = None  # let each parsed pod go as soon as it is handled
            uid = await self.changed("LISTED", pod)
            if uid is not None:
                self._seen.add(uid)

    def resynced(self, resource_version: str) -> None:
        """Pods the list did not hold were deleted while no watch was open: forgotten (their
        final state is unknown, which is fine)."""
        seen, self._seen = self._seen, set()
        vanished = [uid for uid in self.pods if uid not in seen]
        for uid in vanished:
            del self.pods[uid]
        log.info(
            "pods_listed",
            scope=self.scope.label,
            pods=len(seen),
            vanished=len(vanished),
            resource_version=resource_version,
        )
        if not self.synced:
            self.synced = True
            if self._on_synced is not None:
                self._on_synced()

    def malformed(self, detail: str) -> None:
        self._input_error("stream", detail)

    async def changed(self, kind: str, pod: object) -> str | None:
        """Translate one pod, update its state, hand its events over; the pod's uid (None
        when it has none or is another replica's).

        `kind` is the watch event's type, or LISTED for a pod of a list page.
        """
        metadata = json_get(pod, "metadata")
        raw_uid = json_get(metadata, "uid")
        uid: str | None = raw_uid if type(raw_uid) is str else None
        if uid is not None and self._shards > 1 and not self._in_shard(uid):
            return None  # another replica's pod: neither held nor reported here
        previous = self.pods.get(uid) if uid is not None else None
        try:
            result = translate(pod, previous, observed=datetime.now(UTC), id_scheme=self._id_scheme)
        except Exception as exc:  # one odd pod must not stop the watch of all the others
            return self._untranslatable(kind, uid, exc)
        if result.state is None:
            self._skipped(kind, metadata, result)
            return result.key
        if kind == "DELETED":
            self.pods.pop(result.key, None)
        else:
            self.pods[result.key] = result.state
        if result.problems or (self._log_changes and (result.events or result.unchanged)):
            self._report(kind, metadata, result)
        for event in result.events:
            # The outcome future is not awaited: delivery is the emitter's job, and a pod
            # watch has nothing to acknowledge.
            await self._handoff.submit(event, source=SOURCE)
        if self._flow_runs is not None and (
            result.diagnosis_changed or (result.events and result.state.phase in _TOLD_PHASES)
        ):
            self._observe(pod, metadata, result.state, diagnosis_changed=result.diagnosis_changed)
        return result.key

    def _observe(
        self, pod: object, metadata: object, state: PodState, *, diagnosis_changed: bool
    ) -> None:
        """Tell the lifecycle layer what the change asks of the pod's flow run."""
        assert self._flow_runs is not None
        if not isinstance(pod, dict) or not isinstance(metadata, dict):
            return  # cannot be: `translate` kept the pod, so both are objects
        try:
            flow_run_id = uuid.UUID(metadata["labels"][FLOW_RUN_LABEL])
        except (KeyError, TypeError, ValueError):
            return  # the label changed to a bad value: translate skips the pod from now on
        # The category is known already: the summary is built only when there is one.
        diagnosis = explain(pod.get("status")) if state.diagnosis is not None else None
        if diagnosis is not None and self._diagnoses is not None:
            self._diagnoses.remember(flow_run_id, diagnosis)
        namespace, name = metadata["namespace"], metadata["name"]
        failed = state.phase == "Failed"
        # Owners are decoded for a Failed pod only: whether a Job decides its run's fate.
        owners = {"ownerReferences": owner_references(metadata)} if failed else {}
        told = pod_observation(
            flow_run_id=flow_run_id,
            phase=state.phase,
            namespace=namespace,
            name=name,
            owner_kinds=owner_kinds(owners),
            diagnosis=diagnosis,
            diagnosis_changed=diagnosis_changed,
            crash_logs=self._crash_logs.of_pod(namespace, name) if failed else None,
        )
        if told is not None:
            self._flow_runs.observe(told)

    def _in_shard(self, uid: str) -> bool:
        return in_shard(uid, count=self._shards, index=self._shard)

    def _untranslatable(self, kind: str, uid: str | None, exc: Exception) -> str | None:
        detail = str(exc) if isinstance(exc, InputError) else describe(exc)
        self._input_error("pod", detail, uid=uid, exc_info=not isinstance(exc, InputError))
        if uid is not None and kind == "DELETED":
            self.pods.pop(uid, None)
        return uid

    def _skipped(self, kind: str, metadata: object, result: Translation[PodState]) -> None:
        # Its label may have been changed to a bad value since its last event.
        self.pods.pop(result.key, None)
        if result.skipped is not None:
            self._skips.report(
                result.key, result.skipped, pod=_pod_name(metadata), scope=self.scope.label
            )
        if kind == "DELETED":
            self._skips.forget(result.key)

    def _report(self, kind: str, metadata: object, result: Translation[PodState]) -> None:
        pod_name = _pod_name(metadata)
        for problem in result.problems:
            self._input_error(problem.kind, problem.detail, pod=pod_name, uid=result.key)
        if not self._log_changes:
            return
        if result.unchanged == "repeated" and result.state is not None:
            self._changes_log.debug("pod_state_repeated", pod=pod_name, phase=result.state.phase)
        for event in result.events:
            self._changes_log.debug(
                "pod_event", pod=pod_name, watch_event=kind, name=event.event, id=event.id
            )

    def _input_error(self, kind: str, detail: str, **context: object) -> None:
        report_input_error(
            self._metrics,
            source=SOURCE,
            kind=kind,
            detail=detail,
            scope=self.scope.label,
            **context,
        )


def _pod_name(metadata: object) -> str:
    return f"{json_get(metadata, 'namespace')}/{json_get(metadata, 'name')}"
