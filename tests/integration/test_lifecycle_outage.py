"""An orchestration API that fails never holds up the events: the Kubernetes source, its
emitter and the lifecycle worker run together; the worker's calls go through a proxy that
answers 500, the events straight to the real Prefect server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from infra_observer.config import LifecycleSettings, PrefectSettings
from infra_observer.emitter import Emitter, events_api_sink
from infra_observer.lifecycle.worker import Lifecycle
from infra_observer.metrics import Metrics
from infra_observer.prefect_api.client import PrefectApi
from infra_observer.retry import Backoff
from infra_observer.sources.kubernetes.source import KubernetesSource
from tests.integration.ecs_support import eventually
from tests.integration.source_runner import source_with_emitter
from tests.integration.test_kubernetes_flow_runs import EMITTER, running_run
from tests.integration.test_kubernetes_source import settings, unique, until
from tests.peers import KubePeer, PrefectPeer
from tests.peers.faulty_proxy import FaultyProxy, Mode
from tests.peers.kube import create_pod, set_pod_phase


@pytest.fixture
async def failing_api(prefect: PrefectPeer) -> AsyncIterator[tuple[FaultyProxy, PrefectApi]]:
    proxy = await FaultyProxy(prefect.api_url).start()
    await proxy.set_mode(Mode.ERROR_500)
    api = PrefectApi.from_settings(PrefectSettings(api_url=proxy.api_url), timeout_seconds=30)
    yield proxy, api
    await api.aclose()
    await proxy.stop()


async def test_events_flow_while_proposals_fail_and_the_crash_lands_once_the_api_is_back(
    kube: KubePeer, prefect: PrefectPeer, failing_api: tuple[FaultyProxy, PrefectApi]
) -> None:
    proxy, api = failing_api
    metrics = Metrics(CollectorRegistry())
    lifecycle = Lifecycle(
        api=api,
        metrics=metrics,
        settings=LifecycleSettings(),
        backoff=Backoff(initial=0.2, maximum=1.0),
    )
    sink = events_api_sink(PrefectSettings(api_url=prefect.api_url), EMITTER)
    emitter = Emitter(sink=sink, settings=EMITTER, metrics=metrics)
    namespace = unique("outage")
    source = KubernetesSource(
        settings=settings(kube.kubeconfig, namespaces=[namespace]),
        handoff=emitter,
        metrics=metrics,
        flow_runs=lifecycle,
        watch_jobs=True,
    )

    async def ready(task: asyncio.Task[None]) -> None:
        await until(lambda: source.ready or task.done(), "both watches synced")

    run = await running_run(prefect)
    worker = asyncio.create_task(lifecycle.run())
    try:
        async with source_with_emitter(source, emitter, drain_seconds=5, started=ready):
            pod = await create_pod(kube, namespace, "bare", {"prefect.io/flow-run-id": run})
            uid = pod.metadata.uid
            await set_pod_phase(kube, namespace, "bare", "Running")
            await set_pod_phase(kube, namespace, "bare", "Failed", exit_code=2, reason="Error")
            stored = await prefect.wait_for_events(
                expected_count=3, resource_ids=[f"prefect.kubernetes.pod.{uid}"], timeout=60
            )
            assert {event["event"].rsplit(".", 1)[-1] for event in stored} == {
                "pending",
                "running",
                "failed",
            }

            async def retried() -> bool:
                retries = metrics.registry.get_sample_value(
                    "infra_observer_lifecycle_retries_total", {"reason": "RetryableDeliveryError"}
                )
                return (retries or 0) >= 2

            await eventually(retried, "the worker retrying")
            assert await prefect.read_state(run) == ("RUNNING", "Running")
            await proxy.set_mode(Mode.PASS)

            async def crashed() -> bool:
                return await prefect.read_state(run) == ("CRASHED", "Crashed")

            await eventually(crashed, "the run Crashed once the API answers")
    finally:
        worker.cancel()
        await sink.aclose()
