"""The one place where objects are built and wired, and where the daemon's tasks run.

Shutdown is ordered: sources stop first, then the emitter drains within its deadline,
and the health server stops last, so probes answer until the very end.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CollectorRegistry

from infra_observer.config import LifecycleSettings, Settings, api_url_problem
from infra_observer.emitter import Emitter, EventsApiSink, Sink, StdoutSink, events_api_sink
from infra_observer.emitter.spool import SEGMENT_BYTES, Checkpoint, Spool
from infra_observer.emitter.stored import StoredEvents
from infra_observer.errors import ConfigError, SourceError
from infra_observer.events.handoff import EventHandoff
from infra_observer.metrics import Metrics
from infra_observer.observations import FlowRunHandoff
from infra_observer.sources.base import Source

if TYPE_CHECKING:
    from infra_observer.health import HealthServer
    from infra_observer.kubernetes_api.access import Permission
    from infra_observer.kubernetes_api.client import KubeClient
    from infra_observer.leader import LeaderElector
    from infra_observer.lifecycle.worker import Lifecycle

log = structlog.get_logger(__name__)

NO_SOURCES = (
    "no source is enabled; enable at least one: "
    "INFRA_OBSERVER_KUBERNETES_ENABLED=true (pods labelled prefect.io/flow-run-id), "
    "INFRA_OBSERVER_DOCKER_ENABLED=true (containers of Prefect's Docker worker), "
    "INFRA_OBSERVER_ECS_ENABLED=true with INFRA_OBSERVER_ECS_QUEUE_URL (ECS tasks via SQS)"
)
LIFECYCLE_START_WAIT_SECONDS = 30.0
"""At start, the longest the lifecycle waits for the events of the sources' first listing
to be taken for delivery: a standby replica's sources never list, and an unreachable API
takes nothing."""
_START_POLL_SECONDS = 0.05


class _StopRequested(Exception):
    pass


def build_sink(settings: Settings) -> Sink:
    choice = settings.emitter.sink
    api_url = settings.prefect.api_url
    if choice == "events-api" and api_url is None:
        raise ConfigError(
            "INFRA_OBSERVER_EMITTER_SINK='events-api' needs PREFECT_API_URL, e.g. "
            "http://127.0.0.1:4200/api"
        )
    if choice == "stdout" or (choice == "auto" and api_url is None):
        return StdoutSink(sys.stdout.buffer)
    return events_api_sink(settings.prefect, settings.emitter)


def build_emitter(settings: Settings, *, sink: Sink, metrics: Metrics) -> Emitter:
    spool_dir = settings.emitter.spool_dir
    return Emitter(
        sink=sink,
        settings=settings.emitter,
        metrics=metrics,
        # Segments small next to the bound, so freeing space never waits on a huge segment.
        spool=Spool(
            spool_dir, segment_bytes=min(SEGMENT_BYTES, settings.emitter.spool_max_bytes // 8)
        )
        if spool_dir
        else None,
        checkpoint=Checkpoint(spool_dir / "checkpoint.json") if spool_dir else None,
        stored=_stored_events(settings, sink=sink, metrics=metrics),
    )


def _stored_events(settings: Settings, *, sink: Sink, metrics: Metrics) -> StoredEvents | None:
    api_url = settings.prefect.api_url
    if not settings.emitter.skip_stored or not isinstance(sink, EventsApiSink) or api_url is None:
        return None
    return StoredEvents(api=sink.api, metrics=metrics)


def build_lifecycle(settings: Settings, *, sink: Sink, metrics: Metrics) -> Lifecycle | None:
    """The lifecycle worker, on the events sink's API client; None when switched off or
    when events do not go to a Prefect API."""
    if not settings.lifecycle.enabled or not isinstance(sink, EventsApiSink):
        return None
    from infra_observer.lifecycle.worker import Lifecycle

    return Lifecycle(api=sink.api, metrics=metrics, settings=settings.lifecycle)


def build_sources(
    settings: Settings,
    *,
    handoff: EventHandoff,
    metrics: Metrics,
    flow_runs: FlowRunHandoff | None = None,
) -> list[Source]:
    """`flow_runs`: where sources tell the lifecycle layer what they observe (None: off)."""
    # Imported only when enabled, so an unused source costs neither import time nor memory.
    sources: list[Source] = []
    if settings.kubernetes.enabled:
        from infra_observer.sources.kubernetes.source import KubernetesSource

        sources.append(
            KubernetesSource(
                settings=settings.kubernetes,
                handoff=handoff,
                metrics=metrics,
                flow_runs=flow_runs,
                watch_jobs=settings.lifecycle.propose_crashed,
            )
        )
    if settings.docker.enabled:
        from infra_observer.sources.docker.stream import DockerSource

        sources.append(
            DockerSource(
                settings=settings.docker, handoff=handoff, metrics=metrics, flow_runs=flow_runs
            )
        )
    if settings.ecs.enabled:
        from infra_observer.sources.ecs.source import EcsSource

        sources.append(
            EcsSource(settings=settings.ecs, handoff=handoff, metrics=metrics, flow_runs=flow_runs)
        )
    return sources


async def run(settings: Settings) -> None:
    """Run the daemon until SIGTERM or SIGINT; raise when a source fails for good."""
    metrics = Metrics(CollectorRegistry())
    sink = build_sink(settings)
    emitter = build_emitter(settings, sink=sink, metrics=metrics)
    lifecycle = build_lifecycle(settings, sink=sink, metrics=metrics)
    sources = build_sources(settings, handoff=emitter, metrics=metrics, flow_runs=lifecycle)
    if not sources:
        await sink.aclose()
        raise ConfigError(NO_SOURCES)
    await emitter.open()
    elector = _build_elector(settings, metrics=metrics)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    health: HealthServer | None = None
    if settings.health.enabled:
        from infra_observer.health import HealthServer

        health = HealthServer(
            settings=settings.health,
            registry=metrics.registry,
            liveness=lambda: [f"task {task.get_name()} ended" for task in tasks if task.done()],
            readiness=lambda: _readiness_problems(sources, emitter, elector),
        )
        metrics.event_loop_lag.set_function(health.loop_lag_seconds)
    log.info("starting", sources=[source.name for source in sources], sink=sink.name)
    try:
        with _signals_set(stop):
            async with asyncio.TaskGroup() as outer:
                health_task = (
                    outer.create_task(health.run(), name="health") if health is not None else None
                )
                emitter_task = outer.create_task(emitter.run(), name="emitter")
                tasks.append(emitter_task)
                lifecycle_task = None
                if lifecycle is not None:
                    lifecycle_task = outer.create_task(
                        _lifecycle_after_start(lifecycle, sources=sources, emitter=emitter),
                        name="lifecycle",
                    )
                    tasks.append(lifecycle_task)
                try:
                    await _run_sources(sources, stop=stop, tasks=tasks, elector=elector)
                finally:
                    # What the lifecycle still waits for is found again from the sources'
                    # next listing: a restart proposes what the runs' states still admit.
                    if lifecycle_task is not None:
                        lifecycle_task.cancel()
                    log.info("stopping", queued=emitter.queued)
                    emitter.stop(settings.emitter.drain_seconds)
                    await emitter_task
                    if health_task is not None:
                        health_task.cancel()
    finally:
        await sink.aclose()
        if elector is not None:
            await elector.aclose()
    log.info("stopped")


async def _lifecycle_after_start(
    lifecycle: Lifecycle, *, sources: list[Source], emitter: Emitter
) -> None:
    """The lifecycle, once every source has listed what exists and the emitter has taken all
    their events (at most `LIFECYCLE_START_WAIT_SECONDS`): a restart among many pending pods
    sends their events first, without its proposals competing with them for the API and the
    CPU. Observations wait meanwhile in the lifecycle's own bounded queue."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not (emitter.queued == 0 and all(source.ready for source in sources)):
        if loop.time() - started >= LIFECYCLE_START_WAIT_SECONDS:
            break
        await asyncio.sleep(_START_POLL_SECONDS)
    log.info("lifecycle_started", waited_seconds=round(loop.time() - started, 2))
    await lifecycle.run()


def _build_elector(settings: Settings, *, metrics: Metrics) -> LeaderElector | None:
    # Imported only when enabled, as sources and the health server are.
    if not settings.leader_election.enabled:
        return None
    from infra_observer.leader import LeaderElector

    elector = LeaderElector(settings=settings.leader_election, kubernetes=settings.kubernetes)
    lease = metrics.leader.labels(settings.leader_election.lease_name)
    lease.set_function(lambda: elector.is_leader)  # read when scraped
    return elector


async def _run_sources(
    sources: list[Source],
    *,
    stop: asyncio.Event,
    tasks: list[asyncio.Task[None]],
    elector: LeaderElector | None,
) -> None:
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(_raise_when_set(stop), name="stop-signal")
            if elector is not None:
                await elector.acquire()  # a stop signal cancels the wait
                group.create_task(elector.keep(), name="leader-lease")
            for source in sources:
                tasks.append(group.create_task(_supervised(source), name=f"source:{source.name}"))
    except* _StopRequested:
        pass
    finally:
        if elector is not None:
            await elector.release()


async def _supervised(source: Source) -> None:
    await source.run()
    # A source loops until cancelled; returning means it gave up.
    raise SourceError(f"source {source.name} stopped on its own")


async def _raise_when_set(stop: asyncio.Event) -> None:
    await stop.wait()
    raise _StopRequested


def _readiness_problems(
    sources: list[Source], emitter: Emitter, elector: LeaderElector | None
) -> list[str]:
    # A standby replica is ready: it must not block a rolling update while the leader lives.
    standby = elector is not None and not elector.is_leader
    problems = [
        f"source {source.name} has not synced yet"
        for source in sources
        if not source.ready and not standby
    ]
    if not emitter.sink_healthy:
        problems.append("the sink is not reachable (see the delivery_failed logs)")
    return problems


@contextmanager
def _signals_set(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    handled = (signal.SIGTERM, signal.SIGINT)

    def request_stop(signum: signal.Signals) -> None:
        log.info("signal_received", signal=signum.name)
        stop.set()

    for signum in handled:
        loop.add_signal_handler(signum, request_stop, signum)
    try:
        yield
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


async def check(settings: Settings) -> list[tuple[str, bool, str]]:
    """Reach every configured peer once: (peer, passed, detail) per peer."""
    results: list[tuple[str, bool, str]] = []
    metrics = Metrics(CollectorRegistry())
    sink = build_sink(settings)
    try:
        # Found without a request: a server may answer a wrong path in ways that pass.
        problem = api_url_problem(settings.prefect) if sink.name == "events-api" else None
        if problem is not None:
            results.append((f"sink {sink.name}", False, problem))
        else:
            results.append(await _check_one(f"sink {sink.name}", sink.check()))
        lifecycle = settings.lifecycle.enabled and isinstance(sink, EventsApiSink)
        if isinstance(sink, EventsApiSink) and lifecycle and problem is None:
            results.append(await _check_one("lifecycle orchestration", _probe(sink)))
        emitter = Emitter(sink=sink, settings=settings.emitter, metrics=metrics)
        sources = build_sources(settings, handoff=emitter, metrics=metrics)
        if not sources:
            results.append(("sources", False, NO_SOURCES))
        for source in sources:
            results.append(await _check_one(f"source {source.name}", source.check()))
        if lifecycle and settings.kubernetes.enabled:
            results.extend(await _kubernetes_grants_checked(settings))
    finally:
        await sink.aclose()
    return results


async def _probe(sink: EventsApiSink) -> str:
    from infra_observer.prefect_api.orchestration import Orchestration

    url = await Orchestration(sink.api).probe()
    return f"POST {url} answered: flow runs readable for proposals"


def _lifecycle_needs(lifecycle: LifecycleSettings) -> list[tuple[str, str, Permission]]:
    """(switch, its value that needs nothing, permission) for each switch that is on: the
    Jobs watch for crashes, and pods' logs for the crash logs (read only after a crash)."""
    from infra_observer.kubernetes_api.access import Permission

    needs: list[tuple[str, str, Permission]] = []
    if lifecycle.propose_crashed:
        jobs = Permission(group="batch", resource="jobs", verbs=("get", "list", "watch"))
        needs.append(("INFRA_OBSERVER_LIFECYCLE_PROPOSE_CRASHED", "false", jobs))
    if lifecycle.propose_crashed and lifecycle.crash_log_lines > 0:
        logs = Permission(group="", resource="pods", subresource="log", verbs=("get",))
        needs.append(("INFRA_OBSERVER_LIFECYCLE_CRASH_LOG_LINES", "0", logs))
    return needs


async def _kubernetes_grants_checked(settings: Settings) -> list[tuple[str, bool, str]]:
    """One line per permission a lifecycle switch needs, asked of the apiserver for the
    daemon's own identity in every watched scope."""
    from infra_observer.kubernetes_api.client import KubeClient

    needs = _lifecycle_needs(settings.lifecycle)
    if not needs:
        return []
    try:
        client = await KubeClient.connect(settings.kubernetes)
    except ConfigError as exc:  # the source's line says it too; each grant stays unknown
        return [(f"lifecycle kubernetes {need.name}", False, str(exc)) for _, _, need in needs]
    named = list(dict.fromkeys(ns for ns in settings.kubernetes.namespaces if ns))
    namespaces: list[str | None] = [*named] if named else [None]
    try:
        return [
            await _check_one(
                f"lifecycle kubernetes {need.name}",
                _granted(client, need, switch=switch, off=off, namespaces=namespaces),
            )
            for switch, off, need in needs
        ]
    finally:
        await client.aclose()


async def _granted(
    client: KubeClient,
    permission: Permission,
    *,
    switch: str,
    off: str,
    namespaces: list[str | None],
) -> str:
    """What is allowed; `SourceError` naming what is denied, where, the switch that needs
    it and the RBAC rule to add."""
    from infra_observer.kubernetes_api.access import denied
    from infra_observer.kubernetes_api.status import where

    verbs = ", ".join(permission.verbs)
    missing = await denied(client, permission, namespaces=namespaces)
    if not missing:
        scopes = ", ".join(where(namespace) for namespace in namespaces)
        return f"{verbs} on {permission.name} allowed {scopes} (needed by {switch})"
    role = "the daemon's Role in each namespace" if namespaces[0] else "the daemon's ClusterRole"
    raise SourceError(
        f"{switch} needs {verbs} on {permission.name}, denied: {', '.join(missing)}; add the "
        f"RBAC rule {permission.rule} to {role}, or set {switch}={off}"
    )


async def _check_one(peer: str, attempt: Awaitable[str]) -> tuple[str, bool, str]:
    try:
        detail = await attempt
    except Exception as exc:  # every failure is reported, none stops the other checks
        return peer, False, str(exc) or type(exc).__name__
    return peer, True, str(detail)
