"""The Kubernetes source: a pod watch per scope (and a Jobs watch with the lifecycle layer),
its readiness, and its `check`."""

from __future__ import annotations

import asyncio

import httpx
import structlog
from prometheus_client import Gauge

from infra_observer.config import KubernetesSettings
from infra_observer.errors import SourceError
from infra_observer.events.handoff import EventHandoff
from infra_observer.kubernetes_api import (
    LIST_PAGE_SIZE,
    ApiStatusError,
    Collection,
    KubeClient,
    list_page,
    list_refused,
    unreachable,
)
from infra_observer.metrics import Metrics
from infra_observer.observations import FlowRunHandoff
from infra_observer.sources.kubernetes.crash_logs import CrashLogs
from infra_observer.sources.kubernetes.job_watch import JobWatch, LastDiagnoses, jobs_of
from infra_observer.sources.kubernetes.watch import (
    SOURCE,
    ScopeWatch,
    label_selector,
    pods_of,
    scopes_of,
)
from infra_observer.sources.kubernetes.wire import Decoder

log = structlog.get_logger(__name__)


class KubernetesSource:
    """Watches pods of Prefect flow runs and hands their phase changes to the emitter."""

    name = SOURCE

    def __init__(
        self,
        *,
        settings: KubernetesSettings,
        handoff: EventHandoff,
        metrics: Metrics,
        list_page_size: int = LIST_PAGE_SIZE,
        flow_runs: FlowRunHandoff | None = None,
        watch_jobs: bool = False,
    ) -> None:
        """`flow_runs`: the lifecycle layer (None: off); `watch_jobs`: also watch the runs'
        Jobs, whose failure or deletion crashes a run (only with `flow_runs`)."""
        self._settings = settings
        self._metrics = metrics
        self._crash_logs = CrashLogs()
        diagnoses = LastDiagnoses() if flow_runs is not None and watch_jobs else None
        # Built once: a second `run` resumes each scope from its resourceVersion and state.
        self._watches = [
            ScopeWatch(
                scope=scope,
                settings=settings,
                handoff=handoff,
                metrics=metrics,
                on_synced=self._on_synced,
                list_page_size=list_page_size,
                flow_runs=flow_runs,
                diagnoses=diagnoses,
                crash_logs=self._crash_logs,
            )
            for scope in scopes_of(settings)
        ]
        self._job_watches: list[JobWatch] = []
        if flow_runs is not None and diagnoses is not None:
            self._job_watches = [
                JobWatch(
                    collection=jobs_of(scope.namespace, label_selector=label_selector(settings)),
                    settings=settings,
                    metrics=metrics,
                    flow_runs=flow_runs,
                    diagnoses=diagnoses,
                    crash_logs=self._crash_logs,
                    on_synced=self._on_synced,
                    list_page_size=list_page_size,
                )
                for scope in scopes_of(settings)
            ]
        self._tracked = Gauge(
            "infra_observer_kubernetes_tracked_pods",
            "Pods whose state the Kubernetes source holds (one small entry each).",
            registry=metrics.registry,
        )
        self._tracked.set_function(lambda: self.tracked_pods)

    @property
    def ready(self) -> bool:
        return all(watch.synced for watch in self._watches) and all(
            watch.synced for watch in self._job_watches
        )

    @property
    def tracked_pods(self) -> int:
        return sum(len(watch.pods) for watch in self._watches)

    async def run(self) -> None:
        self._metrics.source_ready.labels(source=SOURCE).set(1 if self.ready else 0)
        client = await KubeClient.connect(self._settings)
        log.info(
            "kubernetes_watch_starting",
            host=client.host,
            scopes=[watch.scope.label for watch in self._watches],
            label_selector=label_selector(self._settings),
            jobs=bool(self._job_watches),
        )
        self._crash_logs.client = client
        try:
            async with asyncio.TaskGroup() as group:
                for watch in self._watches:
                    group.create_task(
                        watch.list_watch.run(client), name=f"kubernetes-watch:{watch.scope.label}"
                    )
                for jobs in self._job_watches:
                    group.create_task(
                        jobs.list_watch.run(client),
                        name=f"kubernetes-jobs:{jobs.list_watch.collection.label}",
                    )
        finally:
            self._crash_logs.client = None
            await client.aclose()

    def _on_synced(self) -> None:
        if self.ready:
            self._metrics.source_ready.labels(source=SOURCE).set(1)
            jobs = sum(len(watch.active) for watch in self._job_watches)
            log.info("kubernetes_ready", pods=self.tracked_pods, active_jobs=jobs)

    async def check(self) -> str:
        """List pods (and Jobs, when watched) once per scope, limit 1: proves credentials,
        reachability and RBAC."""
        client = await KubeClient.connect(self._settings)
        host = client.host
        selector = label_selector(self._settings)
        try:
            for scope in scopes_of(self._settings):
                collections = [pods_of(scope, settings=self._settings, decoder=Decoder())]
                if self._job_watches:
                    collections.append(jobs_of(scope.namespace, label_selector=selector))
                for collection in collections:
                    await _list_once(client, collection)
        finally:
            await client.aclose()
        where = ", ".join(scope.where for scope in scopes_of(self._settings))
        what = "pods and Jobs" if self._job_watches else "pods"
        return f"Kubernetes API at {host}: {what} labelled {selector} listable {where}"


async def _list_once(client: KubeClient, collection: Collection) -> None:
    try:
        await list_page(client, collection=collection, limit=1)
    except ApiStatusError as exc:
        refused = list_refused(
            exc, host=client.host, resource=collection.resource, namespace=collection.namespace
        )
        raise SourceError(refused) from exc
    except (httpx.HTTPError, OSError, TimeoutError) as exc:
        raise SourceError(unreachable(exc, host=client.host)) from exc
