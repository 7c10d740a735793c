"""The Kubernetes source with the lifecycle layer, against kube-apiserver and a real Prefect
server: a pod's or a Job's changes move its flow run, and a new diagnosis is logged once.

No controller or kubelet runs beside this apiserver: each test writes its pods' and Jobs'
statuses by hand (`pods/status`, `jobs/status`), as the kubelet and the Job controller
would. Crash logs need a kubelet: tests/integration/test_node.py reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from infra_observer.config import EmitterSettings, LifecycleSettings, PrefectSettings
from infra_observer.emitter import Emitter, events_api_sink
from infra_observer.errors import SourceError
from infra_observer.lifecycle.worker import Lifecycle
from infra_observer.metrics import Metrics
from infra_observer.observations import Observation
from infra_observer.prefect_api.client import PrefectApi
from infra_observer.retry import Backoff
from infra_observer.sources.kubernetes.source import KubernetesSource
from tests.handoff import RecordingHandoff
from tests.integration.ecs_support import eventually
from tests.integration.source_runner import source_with_emitter
from tests.integration.test_kubernetes_source import settings, unique, until
from tests.peers import KubePeer, PrefectPeer
from tests.peers.kube import (
    container_status,
    create_job,
    create_job_pod,
    create_pod,
    delete_job,
    service_account_kubeconfig,
    set_job_status,
    set_pod_phase,
)

FLOW = "infra-observer-kubernetes-lifecycle"
EMITTER = EmitterSettings(
    retry_initial_seconds=0.05,
    retry_max_seconds=0.5,
    flush_interval_seconds=0.05,
    request_timeout_seconds=5.0,
)
# How long a test waits after the last change before it asserts that nothing happened.
SETTLE_SECONDS = 2.0


@contextlib.asynccontextmanager
async def observed(kube: KubePeer, prefect: PrefectPeer, namespace: str) -> AsyncIterator[Metrics]:
    """The source (pods and Jobs of `namespace`), its emitter and a lifecycle worker, all on
    the real Prefect server, from the moment both watches are synced."""
    metrics = Metrics(CollectorRegistry())
    prefect_settings = PrefectSettings(api_url=prefect.api_url)
    api = PrefectApi.from_settings(prefect_settings, timeout_seconds=30)
    lifecycle = Lifecycle(
        api=api,
        metrics=metrics,
        settings=LifecycleSettings(crash_log_lines=50),
        backoff=Backoff(initial=0.2, maximum=1.0),
    )
    sink = events_api_sink(prefect_settings, EMITTER)
    emitter = Emitter(sink=sink, settings=EMITTER, metrics=metrics)
    source = KubernetesSource(
        settings=settings(kube.kubeconfig, namespaces=[namespace]),
        handoff=emitter,
        metrics=metrics,
        flow_runs=lifecycle,
        watch_jobs=True,
    )

    async def ready(task: asyncio.Task[None]) -> None:
        await until(lambda: source.ready or task.done(), "both watches synced")

    worker = asyncio.create_task(lifecycle.run())
    try:
        async with source_with_emitter(source, emitter, drain_seconds=5, started=ready):
            yield metrics
    finally:
        worker.cancel()
        await sink.aclose()
        await api.aclose()


async def running_run(prefect: PrefectPeer) -> str:
    run = await prefect.create_flow_run(flow_name=FLOW)
    await prefect.force_state(run, state_type="RUNNING", state_name="Running")
    return run


async def log_messages(prefect: PrefectPeer, run: str) -> list[str]:
    return [record["message"] for record in await prefect.read_logs(run)]


def flow_labels(run: str) -> dict[str, str]:
    return {"prefect.io/flow-run-id": run}


def proposals(metrics: Metrics, state: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "infra_observer_lifecycle_proposals_total",
        {"source": "kubernetes", "state": state, "outcome": outcome},
    )
    return value or 0.0


async def diagnosed(metrics: Metrics) -> bool:
    value = metrics.registry.get_sample_value(
        "infra_observer_lifecycle_diagnoses_total",
        {"source": "kubernetes", "category": "OOMKilled"},
    )
    return value == 1


async def crashed(prefect: PrefectPeer, run: str) -> str:
    """Wait for the run to be Crashed; its state's message."""

    async def done() -> bool:
        return await prefect.read_state(run) == ("CRASHED", "Crashed")

    await eventually(done, "the run Crashed")
    message: str = (await prefect.read_flow_run(run))["state"].get("message") or ""
    return message


def oom_killed() -> dict[str, Any]:
    return container_status("prefect-job", state="terminated", exit_code=137, reason="OOMKilled")


async def test_a_job_failed_past_its_backoff_limit_crashes_its_run_with_the_oom_diagnosis(
    kube: KubePeer, prefect: PrefectPeer
) -> None:
    run, namespace = await running_run(prefect), unique("lc-oom")
    async with observed(kube, prefect, namespace) as metrics:
        job = await create_job(kube, namespace, "flow", flow_labels(run), backoff_limit=0)
        await create_job_pod(kube, job, "flow-1")
        await set_pod_phase(kube, namespace, "flow-1", "Failed", container_statuses=[oom_killed()])
        # The Job controller counts a pod once it saw it fail: the pod watch has seen it too.
        await eventually(lambda: diagnosed(metrics), "the pod's diagnosis logged")
        await set_job_status(
            kube, namespace, "flow", {"failed": 1, "startTime": "2026-01-01T00:00:00Z"}
        )
        message = await crashed(prefect, run)
    assert message.startswith(f"Job {namespace}/flow failed (BackoffLimitExceeded)")
    assert "Last pod diagnosis (OOMKilled): Container prefect-job was killed" in message
    logs = await log_messages(prefect, run)
    assert len(logs) == 1, logs  # one diagnosis line; no crash logs without a kubelet
    assert logs[0].startswith("Container prefect-job was killed for exceeding its memory limit")


async def test_a_pod_left_pending_is_infrastructure_pending_with_one_diagnosis_line(
    kube: KubePeer, prefect: PrefectPeer
) -> None:
    run = await prefect.create_flow_run(flow_name=FLOW)
    namespace = unique("lc-pull")
    async with observed(kube, prefect, namespace) as metrics:
        await create_pod(kube, namespace, "flow", flow_labels(run))
        for attempt in range(4):
            reason = "ErrImagePull" if attempt % 2 else "ImagePullBackOff"
            await set_pod_phase(
                kube,
                namespace,
                "flow",
                "Pending",
                container_statuses=[
                    container_status(
                        "busybox",
                        state="waiting",
                        reason=reason,
                        message=f"Back-off pulling image (attempt {attempt})",
                    )
                ],
            )

        async def pending() -> bool:
            return await prefect.read_state(run) == ("PENDING", "InfrastructurePending")

        await eventually(pending, "the run InfrastructurePending")
        await asyncio.sleep(SETTLE_SECONDS)
    logs = await log_messages(prefect, run)
    assert len(logs) == 1, logs
    assert "cannot pull its image" in logs[0]
    assert proposals(metrics, "InfrastructurePending", "accept") == 1


async def test_a_job_deleted_while_it_runs_crashes_its_run(
    kube: KubePeer, prefect: PrefectPeer
) -> None:
    run, namespace = await running_run(prefect), unique("lc-del")
    async with observed(kube, prefect, namespace):
        await create_job(kube, namespace, "flow", flow_labels(run))
        await set_job_status(
            kube, namespace, "flow", {"active": 1, "startTime": "2026-01-01T00:00:00Z"}
        )
        await delete_job(kube, namespace, "flow")
        message = await crashed(prefect, run)
    assert message == f"Job {namespace}/flow was deleted before it succeeded."


async def test_a_pod_that_fails_while_its_job_retries_crashes_nothing(
    kube: KubePeer, prefect: PrefectPeer
) -> None:
    run, namespace = await running_run(prefect), unique("lc-retry")
    async with observed(kube, prefect, namespace) as metrics:
        job = await create_job(kube, namespace, "flow", flow_labels(run), backoff_limit=2)
        await create_job_pod(kube, job, "flow-1")
        await set_pod_phase(kube, namespace, "flow-1", "Failed", exit_code=1)
        await set_job_status(
            kube, namespace, "flow", {"failed": 1, "active": 1, "startTime": "2026-01-01T00:00:00Z"}
        )
        await asyncio.sleep(SETTLE_SECONDS)
        assert proposals(metrics, "Crashed", "accept") == 0
    assert await prefect.read_state(run) == ("RUNNING", "Running")


async def test_a_late_failure_leaves_a_completed_run_alone(
    kube: KubePeer, prefect: PrefectPeer
) -> None:
    run, namespace = await running_run(prefect), unique("lc-late")
    await prefect.force_state(run, state_type="COMPLETED", state_name="Completed")
    async with observed(kube, prefect, namespace) as metrics:
        await create_pod(kube, namespace, "flow", flow_labels(run))
        await set_pod_phase(kube, namespace, "flow", "Failed", exit_code=1)

        async def considered() -> bool:
            return proposals(metrics, "Crashed", "not_admitted") == 1

        await eventually(considered, "the crash considered and not proposed")
    assert await prefect.read_state(run) == ("COMPLETED", "Completed")


async def test_a_bare_pod_that_failed_crashes_its_run(kube: KubePeer, prefect: PrefectPeer) -> None:
    run, namespace = await running_run(prefect), unique("lc-bare")
    async with observed(kube, prefect, namespace):
        await create_pod(kube, namespace, "flow", flow_labels(run))
        await set_pod_phase(kube, namespace, "flow", "Failed", exit_code=3)
        message = await crashed(prefect, run)
    assert message == f"Kubernetes pod {namespace}/flow failed."


async def test_a_job_already_failed_when_listed_crashes_its_run(
    kube: KubePeer, prefect: PrefectPeer
) -> None:
    run, namespace = await running_run(prefect), unique("lc-listed")
    await create_job(kube, namespace, "flow", flow_labels(run), backoff_limit=0)
    await set_job_status(
        kube, namespace, "flow", {"failed": 1, "startTime": "2026-01-01T00:00:00Z"}
    )
    async with observed(kube, prefect, namespace):
        message = await crashed(prefect, run)
    assert message.startswith(f"Job {namespace}/flow failed (BackoffLimitExceeded)")


class Observed:
    """A lifecycle layer that only keeps what it is told."""

    def __init__(self) -> None:
        self.observations: list[Observation] = []

    def observe(self, observation: Observation) -> None:
        self.observations.append(observation)


POD_READS = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
JOB_READS = [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch"]}]


async def test_check_lists_jobs_only_when_they_are_watched_and_names_the_missing_grant(
    kube: KubePeer,
) -> None:
    namespace = unique("lc-check")
    _, pods_only = await service_account_kubeconfig(kube, namespace, "pods", rules=POD_READS)
    _, both = await service_account_kubeconfig(kube, namespace, "both", rules=POD_READS + JOB_READS)

    def source(kubeconfig: Path, *, watch_jobs: bool) -> KubernetesSource:
        return KubernetesSource(
            settings=settings(kubeconfig, namespaces=[namespace]),
            handoff=RecordingHandoff(accepts=False),
            metrics=Metrics(CollectorRegistry()),
            flow_runs=Observed(),
            watch_jobs=watch_jobs,
        )

    assert "pods labelled" in await source(pods_only, watch_jobs=False).check()
    with pytest.raises(SourceError, match=f"forbids listing jobs in namespace {namespace}"):
        await source(pods_only, watch_jobs=True).check()
    assert "pods and Jobs labelled" in await source(both, watch_jobs=True).check()
