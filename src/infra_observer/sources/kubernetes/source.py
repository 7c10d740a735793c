"""The Kubernetes source: one pod watch per scope, its readiness, and its `check`."""

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
    KubeClient,
    list_page,
    list_refused,
    unreachable,
)
from infra_observer.metrics import Metrics
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
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        # Built once: a second `run` resumes each scope from its resourceVersion and state.
        self._watches = [
            ScopeWatch(
                scope=scope,
                settings=settings,
                handoff=handoff,
                metrics=metrics,
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
        return all(watch.synced for watch in self._watches)

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
        )
        try:
            async with asyncio.TaskGroup() as group:
                for watch in self._watches:
                    group.create_task(
                        watch.list_watch.run(client), name=f"kubernetes-watch:{watch.scope.label}"
                    )
        finally:
            await client.aclose()

    def _on_synced(self) -> None:
        if self.ready:
            self._metrics.source_ready.labels(source=SOURCE).set(1)
            log.info("kubernetes_ready", pods=self.tracked_pods)

    async def check(self) -> str:
        """List pods once per scope (limit 1): proves credentials, reachability and RBAC."""
        client = await KubeClient.connect(self._settings)
        host = client.host
        try:
            for scope in scopes_of(self._settings):
                pods = pods_of(scope, settings=self._settings, decoder=Decoder())
                try:
                    await list_page(client, collection=pods, limit=1)
                except ApiStatusError as exc:
                    raise SourceError(
                        list_refused(exc, host=host, resource="pods", namespace=scope.namespace)
                    ) from exc
                except (httpx.HTTPError, OSError, TimeoutError) as exc:
                    raise SourceError(unreachable(exc, host=host)) from exc
        finally:
            await client.aclose()
        where = ", ".join(scope.where for scope in scopes_of(self._settings))
        selector = label_selector(self._settings)
        return f"Kubernetes API at {host}: pods labelled {selector} listable {where}"
