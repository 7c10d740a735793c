"""The Kubernetes source against a real kube-apiserver (and, for delivery, a real Prefect server).

There is no kubelet: the tests move pods through phases by patching `pods/status` the way
a kubelet reports them. Each test works in its own namespaces (namespaces cannot be
deleted here), so tests never see each other's pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import subprocess
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from infra_observer.config import EmitterSettings, KubernetesSettings, PrefectSettings
from infra_observer.emitter import Emitter, events_api_sink
from infra_observer.errors import SourceError
from infra_observer.events.ids import pod_event_id
from infra_observer.kubernetes_api import KubeClient, list_page
from infra_observer.metrics import Metrics
from infra_observer.sources.kubernetes.source import KubernetesSource
from infra_observer.sources.kubernetes.watch import Scope, pods_of
from infra_observer.sources.kubernetes.wire import Decoder
from tests.handoff import RecordingHandoff
from tests.peers import KubePeer, PrefectPeer
from tests.peers._util import free_port, provisioned
from tests.peers.kube import (
    create_pod,
    delete_pod,
    ensure_namespace,
    evict_pod,
    service_account_kubeconfig,
    set_pod_phase,
    write_kubeconfig,
)

WAIT_SECONDS = 60.0
CHART = Path(__file__).resolve().parents[2] / "helm" / "infra-observer"


def chart_role_rules(namespace: str | None, home: Path) -> list[dict[str, Any]]:
    """The rules the Helm chart grants the watcher: its Role in `namespace`, or its
    ClusterRole when no namespace is given (watching the whole cluster)."""
    scope = ["--set", f"kubernetes.namespaces={{{namespace}}}"] if namespace else []
    done = subprocess.run(
        [
            str(provisioned("helm")),
            "template",
            "obs",
            str(CHART),
            "--namespace",
            "observability",
            "--kube-version",
            "1.30.0",
            "--set",
            "kubernetes.enabled=true",
            *scope,
        ],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    kind = "Role" if namespace else "ClusterRole"
    roles = [
        doc
        for doc in yaml.safe_load_all(done.stdout)
        if doc and doc["kind"] == kind and doc["metadata"].get("namespace") in (namespace, None)
    ]
    assert len(roles) == 1, roles
    rules: list[dict[str, Any]] = roles[0]["rules"]
    return rules


def pod_rid(uid: str) -> str:
    """The resource id of the pod with `uid`, as its events carry it."""
    return f"prefect.kubernetes.pod.{uid}"


async def until(condition: Callable[[], bool], what: str, limit: float = WAIT_SECONDS) -> None:
    """Wait for a condition (a bound on waiting, not an assertion about time)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def settings(kubeconfig: Path, **overrides: Any) -> KubernetesSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "kubeconfig": kubeconfig,
        "watch_timeout_seconds": 300,
        "inactivity_timeout_seconds": 330.0,
        "backoff_max_seconds": 1.0,
    }
    values.update(overrides)
    return KubernetesSettings(**values)


def labels(flow_run: str | None = None, **extra: str) -> dict[str, str]:
    return {"prefect.io/flow-run-id": flow_run or str(uuid.uuid4()), **extra}


def reconnects(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "infra_observer_source_reconnects_total", {"source": "kubernetes", "reason": reason}
    )
    return value or 0.0


class Running:
    """A source running as a task, with what it handed over."""

    def __init__(self, source: KubernetesSource, handoff: Any, metrics: Metrics) -> None:
        self.source = source
        self.handoff = handoff
        self.metrics = metrics
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.source.run(), name="kubernetes-source")
        await until(lambda: self.source.ready or self.task is None or self.task.done(), "ready")
        if self.task.done():
            self.task.result()  # shows why it stopped

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None


@contextlib.asynccontextmanager
async def running(
    config: KubernetesSettings, *, handoff: Any = None, **kwargs: Any
) -> AsyncIterator[Running]:
    metrics = Metrics(CollectorRegistry())
    handoff = handoff or RecordingHandoff(source="kubernetes")
    source = KubernetesSource(settings=config, handoff=handoff, metrics=metrics, **kwargs)
    run = Running(source, handoff, metrics)
    await run.start()
    try:
        yield run
    finally:
        await run.stop()


async def new_pod(kube: KubePeer, namespace: str, name: str, pod_labels: dict[str, str]) -> str:
    pod = await create_pod(kube, namespace, name, pod_labels, node_name="node-1")
    uid: str = pod.metadata.uid
    return uid


def pod_id(uid: str, phase: str, restarts: int = 0) -> uuid.UUID:
    return pod_event_id(uid=uid, phase=phase, restart_count=restarts)


# --- phases and eviction ------------------------------------------------------------------


async def run_then_end_each_way(kube: KubePeer, ns: str, pods: Iterable[str]) -> None:
    """Every pod Running, then each ends its own way (the pods of the phases test)."""
    for name in pods:
        await set_pod_phase(kube, ns, name, "Running")
    await set_pod_phase(kube, ns, "ok", "Succeeded")
    await set_pod_phase(kube, ns, "crash", "Failed", exit_code=2)
    await evict_pod(kube, ns, "kubelet-evicted", disruption_reason=None)
    await evict_pod(kube, ns, "api-evicted", kubelet_reason=False)
    await set_pod_phase(kube, ns, "lost", "Unknown")


def assert_phase_events(
    handoff: RecordingHandoff, *, name: str, uid: str, namespace: str, flow_run: str
) -> None:
    """The three events of one pod of the phases test: ids, resource and related."""
    events = handoff.of(pod_rid(uid))
    last_raw = {"ok": "Succeeded", "lost": "Unknown"}.get(name, "Failed")
    assert [e.id for e in events] == [
        pod_id(uid, "Pending"),
        pod_id(uid, "Running"),
        pod_id(uid, last_raw),
    ]
    for event in events:
        assert event.resource["prefect.resource.name"] == name
        assert event.resource["kubernetes.namespace"] == namespace
        assert event.follows is None  # the emitter chains, not the source
        assert [r["prefect.resource.role"] for r in event.related] == [
            "flow-run",
            "deployment",
            "worker",
        ]
        assert event.related[0]["prefect.resource.id"] == f"prefect.flow-run.{flow_run}"
        assert event.related[0]["prefect.resource.name"] == "brave-otter"


async def test_every_phase_and_the_eviction_rule(kube: KubePeer) -> None:
    ns = unique("phases")
    await ensure_namespace(kube, ns)
    flow_run, deployment = str(uuid.uuid4()), str(uuid.uuid4())
    pod_labels = labels(
        flow_run,
        **{
            "prefect.io/flow-run-name": "brave-otter",
            "prefect.io/deployment-id": deployment,
            "prefect.io/worker-name": "k8s-worker",
        },
    )
    async with running(settings(kube.kubeconfig, namespaces=[ns])) as run:
        handoff: RecordingHandoff = run.handoff
        uids = {
            name: await new_pod(kube, ns, name, pod_labels)
            for name in ("ok", "crash", "kubelet-evicted", "api-evicted", "lost")
        }
        await until(
            lambda: all(handoff.of(pod_rid(uid)) for uid in uids.values()), "pending events"
        )

        await run_then_end_each_way(kube, ns, uids)
        await until(
            lambda: all(len(handoff.of(pod_rid(uid))) == 3 for uid in uids.values()), "3 each"
        )

    expected = {
        "ok": ["pending", "running", "succeeded"],
        "crash": ["pending", "running", "failed"],
        "kubelet-evicted": ["pending", "running", "evicted"],
        "api-evicted": ["pending", "running", "evicted"],
        "lost": ["pending", "running", "unknown"],
    }
    assert {name: handoff.names(pod_rid(uid)) for name, uid in uids.items()} == expected
    for name, uid in uids.items():
        assert_phase_events(handoff, name=name, uid=uid, namespace=ns, flow_run=flow_run)
    reasons = {
        name: handoff.of(pod_rid(uid))[-1].resource.get("kubernetes.reason")
        for name, uid in uids.items()
    }
    assert reasons == {
        "ok": None,
        "crash": None,
        "kubelet-evicted": "Evicted",
        "api-evicted": "EvictionByEvictionAPI",
        "lost": None,
    }


async def test_restarts_get_new_ids_and_deletion_sends_nothing_new(kube: KubePeer) -> None:
    ns = unique("restarts")
    await ensure_namespace(kube, ns)
    async with running(settings(kube.kubeconfig, namespaces=[ns])) as run:
        handoff: RecordingHandoff = run.handoff
        uid = await new_pod(kube, ns, "looper", labels())
        for restarts in (0, 1, 2):
            await set_pod_phase(kube, ns, "looper", "Running", restart_count=restarts)
        # Same state again (a status patch that changes nothing the watcher reads).
        await set_pod_phase(kube, ns, "looper", "Running", restart_count=2, message="still here")
        marker = await new_pod(kube, ns, "marker", labels())
        await until(lambda: bool(handoff.of(pod_rid(marker))), "marker event")
        assert run.source.tracked_pods == 2

        await delete_pod(kube, ns, "looper")
        await until(lambda: run.source.tracked_pods == 1, "state released on deletion")
        await delete_pod(kube, ns, "marker")
        await until(lambda: run.source.tracked_pods == 0, "state released on deletion")

    assert handoff.names(pod_rid(uid)) == ["pending", "running", "running", "running"]
    assert [e.id for e in handoff.of(pod_rid(uid))] == [
        pod_id(uid, "Pending"),
        pod_id(uid, "Running", 0),
        pod_id(uid, "Running", 1),
        pod_id(uid, "Running", 2),
    ]
    assert handoff.names(pod_rid(marker)) == ["pending"]


async def test_a_pod_that_loses_its_label_is_released_without_an_event(kube: KubePeer) -> None:
    """The server reports a pod that stops matching the selector as DELETED."""
    from kubernetes_asyncio import client

    ns = unique("unlabel")
    await ensure_namespace(kube, ns)
    async with running(settings(kube.kubeconfig, namespaces=[ns])) as run:
        handoff: RecordingHandoff = run.handoff
        uid = await new_pod(kube, ns, "p", labels())
        await until(lambda: run.source.tracked_pods == 1, "tracked")
        async with kube.api_client() as api:
            await client.CoreV1Api(api).patch_namespaced_pod(
                "p",
                ns,
                {"metadata": {"labels": {"prefect.io/flow-run-id": None}}},
                _content_type="application/merge-patch+json",
            )
        await until(lambda: run.source.tracked_pods == 0, "released")
    assert handoff.names(pod_rid(uid)) == ["pending"]


def skipped(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "infra_observer_objects_skipped_total", {"source": "kubernetes", "reason": reason}
    )
    return value or 0.0


async def test_pods_with_an_unusable_flow_run_id_are_skipped_and_reported_once(
    kube: KubePeer,
) -> None:
    """The label selects on the server; an empty or non-UUID value gives no event at all."""
    ns = unique("skip")
    await ensure_namespace(kube, ns)
    listed = await new_pod(kube, ns, "listed", labels(flow_run="not-a-uuid"))
    with capture_logs() as logs:
        async with running(settings(kube.kubeconfig, namespaces=[ns])) as run:
            handoff: RecordingHandoff = run.handoff
            empty = await new_pod(kube, ns, "empty", {"prefect.io/flow-run-id": ""})
            for phase in ("Running", "Succeeded"):
                await set_pod_phase(kube, ns, "listed", phase)
                await set_pod_phase(kube, ns, "empty", phase)
            # Changes of one scope arrive in order: once this is in, so are the ones above.
            marker = await new_pod(kube, ns, "marker", labels())
            await until(lambda: handoff.names(pod_rid(marker)) == ["pending"], "the marker")
            assert run.source.tracked_pods == 1
            assert skipped(run.metrics, "flow_run_id_not_uuid") == 1
            assert skipped(run.metrics, "flow_run_id_empty") == 1
            await delete_pod(kube, ns, "empty")
            await delete_pod(kube, ns, "listed")
            await delete_pod(kube, ns, "marker")
            await until(lambda: run.source.tracked_pods == 0, "the marker deleted")
    assert [e.resource_id for e in handoff.events] == [f"prefect.kubernetes.pod.{marker}"]
    reports = [e for e in logs if e["event"] == "object_skipped"]
    assert sorted((e["object"], e["reason"]) for e in reports) == sorted(
        [(listed, "flow_run_id_not_uuid"), (empty, "flow_run_id_empty")]
    )
    assert {e["pod"] for e in reports} == {f"{ns}/listed", f"{ns}/empty"}
    assert "'not-a-uuid' is not a UUID" in str([e["detail"] for e in reports])
    assert not [e for e in logs if e["event"] == "input_error"]


async def test_readiness_is_exported_as_0_until_the_apiserver_is_reached(
    kube: KubePeer, tmp_path: Path
) -> None:
    ns = unique("ready")
    await ensure_namespace(kube, ns)
    # Nothing listens on the proxy's port until it is started: the apiserver is unreachable.
    proxy = FreezingProxy(int(kube.server.rsplit(":", 1)[1]))
    kubeconfig = write_kubeconfig(
        tmp_path / "kubeconfig",
        server=f"https://127.0.0.1:{proxy.port}",
        ca_file=kube.ca_file,
        token=kube.token,
        user="admin",
    )
    metrics = Metrics(CollectorRegistry())
    source = KubernetesSource(
        settings=settings(kubeconfig, namespaces=[ns]),
        handoff=RecordingHandoff(source="kubernetes"),
        metrics=metrics,
    )
    ready = {"source": "kubernetes"}
    task = asyncio.create_task(source.run())
    try:
        await asyncio.sleep(0)
        assert metrics.registry.get_sample_value("infra_observer_source_ready", ready) == 0
        await until(lambda: reconnects(metrics, "error") >= 1, "a failed attempt")
        assert metrics.registry.get_sample_value("infra_observer_source_ready", ready) == 0
        await proxy.start()
        await until(lambda: source.ready, "ready once the apiserver answers")
        assert metrics.registry.get_sample_value("infra_observer_source_ready", ready) == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await proxy.stop()


# --- what is ignored ----------------------------------------------------------------------


async def test_unwatched_namespaces_and_unlabelled_pods_are_ignored(kube: KubePeer) -> None:
    watched, other = unique("watched"), unique("other")
    await ensure_namespace(kube, watched)
    await ensure_namespace(kube, other)
    async with running(settings(kube.kubeconfig, namespaces=[watched])) as run:
        handoff: RecordingHandoff = run.handoff
        await new_pod(kube, other, "elsewhere", labels())
        await create_pod(kube, watched, "plain", {"app": "not-prefect"}, node_name="node-1")
        await set_pod_phase(kube, other, "elsewhere", "Running")
        await set_pod_phase(kube, watched, "plain", "Running")
        # The watch delivers in order: once the marker is seen, the others would have been.
        marker = await new_pod(kube, watched, "marker", labels())
        await set_pod_phase(kube, watched, "marker", "Running")
        await until(lambda: len(handoff.of(pod_rid(marker))) == 2, "marker events")
        assert run.source.tracked_pods == 1
    assert {e.resource_id for e in handoff.events} == {f"prefect.kubernetes.pod.{marker}"}


async def test_cluster_wide_with_an_extra_selector(kube: KubePeer) -> None:
    team = unique("team")
    first_ns, second_ns = unique("cw-a"), unique("cw-b")
    for ns in (first_ns, second_ns):
        await ensure_namespace(kube, ns)
    config = settings(kube.kubeconfig, label_selector=f"team={team}")
    async with running(config) as run:
        handoff: RecordingHandoff = run.handoff
        a = await new_pod(kube, first_ns, "a", labels(team=team))
        b = await new_pod(kube, second_ns, "b", labels(team=team))
        await new_pod(kube, second_ns, "other-team", labels(team="someone-else"))
        marker = await new_pod(kube, second_ns, "marker", labels(team=team))
        await until(lambda: bool(handoff.of(pod_rid(marker))), "marker event")
    assert {e.resource_id.rsplit(".", 1)[-1] for e in handoff.events} == {a, b, marker}


# --- many pods, paginated list --------------------------------------------------------------


async def test_many_pods_listed_in_pages_then_watched(kube: KubePeer) -> None:
    ns = unique("many")
    await ensure_namespace(kube, ns)
    count = 120
    from kubernetes_asyncio import client

    async with kube.api_client() as api:
        core = client.CoreV1Api(api)

        async def make(i: int) -> str:
            body = {
                "metadata": {"name": f"pod-{i}", "labels": labels()},
                "spec": {
                    "containers": [{"name": "c", "image": "busybox"}],
                    "nodeName": "node-1",
                },
            }
            pod = await core.create_namespaced_pod(ns, body)
            return str(pod.metadata.uid)

        uids: list[str] = []
        for start in range(0, count, 20):
            uids += await asyncio.gather(*(make(i) for i in range(start, min(start + 20, count))))

    config = settings(kube.kubeconfig, namespaces=[ns])
    with capture_logs() as logs:
        async with running(config, list_page_size=25) as run:
            handoff: RecordingHandoff = run.handoff
            # The initial list (5 pages) was processed before ready.
            assert run.source.tracked_pods == count
            tracked = run.metrics.registry.get_sample_value(
                "infra_observer_kubernetes_tracked_pods"
            )
            assert tracked == count
            ready = run.metrics.registry.get_sample_value(
                "infra_observer_source_ready", {"source": "kubernetes"}
            )
            assert ready == 1
            assert len(handoff.events) == count
            for start in range(0, count, 20):
                await asyncio.gather(
                    *(
                        set_pod_phase(kube, ns, f"pod-{i}", "Running")
                        for i in range(start, min(start + 20, count))
                    )
                )
            await until(lambda: len(handoff.events) == 2 * count, "a running event per pod")
    assert sorted(handoff.events[i].resource_id for i in range(count)) == sorted(
        f"prefect.kubernetes.pod.{uid}" for uid in uids
    )
    for uid in uids:
        assert handoff.names(pod_rid(uid)) == ["pending", "running"]
    listed = [entry for entry in logs if entry["event"] == "pods_listed"]
    assert listed[0]["pods"] == count


async def test_a_listed_page_is_released_once_decoded(kube: KubePeer) -> None:
    """A page's body must not outlive its decoding: httpx ties each response to its stream
    in a reference cycle, so a body kept on the response would wait for the collector."""
    ns = unique("page")
    await ensure_namespace(kube, ns)
    from kubernetes_asyncio import client as kube_client

    async with kube.api_client() as api:
        core = kube_client.CoreV1Api(api)
        for i in range(40):
            body = {
                "metadata": {
                    "name": f"pod-{i}",
                    "labels": labels(),
                    "annotations": {"note": "x" * 10_000},
                },
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            }
            await core.create_namespaced_pod(ns, body)
    client = await KubeClient.connect(settings(kube.kubeconfig))
    pods = pods_of(Scope(ns), settings=settings(kube.kubeconfig), decoder=Decoder())
    try:
        page = await list_page(client, collection=pods, limit=100)
        assert len(page["items"]) == 40
        del page
        gc.collect()
        gc.disable()
        tracemalloc.start()
        try:
            page = await list_page(client, collection=pods, limit=100)
            assert len(page["items"]) == 40
            decoded, _ = tracemalloc.get_traced_memory()
            del page
            retained, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            gc.enable()
    finally:
        await client.aclose()
    # The page is over 400 KB of JSON; what may stay is the connection's and the
    # response's own few tens of KB.
    assert retained < 150_000, (decoded, retained)


# --- failures of the stream -----------------------------------------------------------------


async def test_410_gone_relists_and_reconciles(kube: KubePeer) -> None:
    ns = unique("gone")
    await ensure_namespace(kube, ns)
    config = settings(kube.kubeconfig, namespaces=[ns])
    metrics = Metrics(CollectorRegistry())
    handoff = RecordingHandoff(source="kubernetes")
    source = KubernetesSource(settings=config, handoff=handoff, metrics=metrics)
    run = Running(source, handoff, metrics)

    await new_pod(kube, ns, "stays", labels())
    await new_pod(kube, ns, "goes", labels())
    await run.start()
    try:
        await until(lambda: source.tracked_pods == 2, "two pods")
        old_version = source._watches[0].list_watch.resource_version
    finally:
        await run.stop()

    # While nothing watches: one pod moves on, one disappears, one appears; then the
    # history the old resourceVersion points into is compacted away.
    stays = await set_pod_phase(kube, ns, "stays", "Running")
    await delete_pod(kube, ns, "goes")
    born = await new_pod(kube, ns, "born", labels())
    kube.compact_etcd()
    assert source._watches[0].list_watch.resource_version == old_version

    with capture_logs() as logs:
        await run.start()
        try:
            await until(lambda: reconnects(metrics, "gone") >= 1, "410")
            await until(lambda: bool(handoff.of(pod_rid(born))), "the new pod")
            await until(lambda: source.tracked_pods == 2, "reconciled state")
            await set_pod_phase(kube, ns, "born", "Running")
            await until(
                lambda: len(handoff.of(pod_rid(born))) == 2, "watching again after the re-list"
            )
        finally:
            await run.stop()

    assert handoff.names(pod_rid(stays.metadata.uid)) == ["pending", "running"]
    assert handoff.names(pod_rid(born)) == ["pending", "running"]
    assert len(handoff.events) == 2 + 1 + 2  # nothing repeated for the pod that went away
    restarted = [e for e in logs if e["event"] == "watch_restarted" and e["reason"] == "gone"]
    assert restarted
    assert restarted[0]["resource_version"] == old_version
    assert restarted[0]["scope"] == ns
    listed = [e for e in logs if e["event"] == "pods_listed"]
    assert listed[-1]["vanished"] == 1


async def test_apiserver_restart_in_the_middle(kube: KubePeer) -> None:
    ns = unique("restart")
    await ensure_namespace(kube, ns)
    async with running(settings(kube.kubeconfig, namespaces=[ns])) as run:
        handoff: RecordingHandoff = run.handoff
        uid = await new_pod(kube, ns, "survivor", labels())
        await until(lambda: len(handoff.of(pod_rid(uid))) == 1, "pending")

        await asyncio.to_thread(kube.restart_apiserver)
        await set_pod_phase(kube, ns, "survivor", "Running")
        await until(lambda: len(handoff.of(pod_rid(uid))) == 2, "running after the restart")
        await set_pod_phase(kube, ns, "survivor", "Succeeded")
        await until(lambda: len(handoff.of(pod_rid(uid))) == 3, "succeeded")
        restarts = reconnects(run.metrics, "error") + reconnects(run.metrics, "expired")
    assert restarts >= 1
    assert handoff.names(pod_rid(uid)) == ["pending", "running", "succeeded"]


class FreezingProxy:
    """A TCP relay on loopback whose open connections can be frozen: bytes stop flowing but
    nothing is closed, like a half-dead network path. New connections relay normally."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.connections = 0
        self._frozen: list[asyncio.Event] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    def freeze(self) -> None:
        for flag in self._frozen:
            flag.set()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        frozen = asyncio.Event()
        self._frozen.append(frozen)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink, frozen))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, frozen: asyncio.Event
    ) -> None:
        try:
            while data := await source.read(65536):
                if frozen.is_set():
                    await asyncio.Event().wait()  # hold the connection open, forward nothing
                sink.write(data)
                await sink.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            sink.close()


async def test_stalled_stream_is_replaced(kube: KubePeer, tmp_path: Path) -> None:
    ns = unique("stall")
    await ensure_namespace(kube, ns)
    port = int(kube.server.rsplit(":", 1)[1])
    proxy = FreezingProxy(port)
    await proxy.start()
    kubeconfig = write_kubeconfig(
        tmp_path / "kubeconfig",
        server=f"https://127.0.0.1:{proxy.port}",
        ca_file=kube.ca_file,
        token=kube.token,
        user="admin",
    )
    config = settings(kubeconfig, namespaces=[ns], inactivity_timeout_seconds=2.0)
    try:
        with capture_logs() as logs:
            async with running(config) as run:
                handoff: RecordingHandoff = run.handoff
                uid = await new_pod(kube, ns, "p", labels())
                await until(lambda: len(handoff.of(pod_rid(uid))) == 1, "pending")
                proxy.freeze()
                await set_pod_phase(kube, ns, "p", "Running")
                await until(lambda: len(handoff.of(pod_rid(uid))) == 2, "running, via a new stream")
    finally:
        await proxy.stop()
    assert reconnects(run.metrics, "inactivity") >= 1
    stalls = [e for e in logs if e["event"] == "watch_restarted" and e["reason"] == "inactivity"]
    assert stalls
    assert stalls[0]["timeout"] == 2.0
    assert proxy.connections >= 2
    assert handoff.names(pod_rid(uid)) == ["pending", "running"]


# --- RBAC -----------------------------------------------------------------------------------


async def test_runs_with_only_the_charts_role(kube: KubePeer, tmp_path: Path) -> None:
    ns = unique("rbac")
    rules = chart_role_rules(ns, tmp_path)
    # Pod reads, and what the lifecycle's default switches need (jobs, pods/log).
    assert rules == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    ]
    _, kubeconfig = await service_account_kubeconfig(kube, ns, "observer", rules=rules)
    config = settings(kubeconfig, namespaces=[ns])
    source = KubernetesSource(
        settings=config,
        handoff=RecordingHandoff(source="kubernetes"),
        metrics=Metrics(CollectorRegistry()),
    )
    assert ns in await source.check()
    async with running(config) as run:
        handoff: RecordingHandoff = run.handoff
        uid = await new_pod(kube, ns, "p", labels())
        await set_pod_phase(kube, ns, "p", "Running")
        await until(lambda: len(handoff.of(pod_rid(uid))) == 2, "events under the restricted role")

    # The same identity cannot watch the whole cluster; check says what to grant.
    cluster_wide = KubernetesSource(
        settings=settings(kubeconfig),
        handoff=RecordingHandoff(source="kubernetes"),
        metrics=Metrics(CollectorRegistry()),
    )
    with pytest.raises(SourceError, match="403") as raised:
        await cluster_wide.check()
    assert "grant get, list and watch on pods" in str(raised.value)
    assert "ClusterRole" in str(raised.value)

    # An unreadable namespace: check names the namespace and the Role to create.
    elsewhere = unique("rbac-other")
    await ensure_namespace(kube, elsewhere)
    other = KubernetesSource(
        settings=settings(kubeconfig, namespaces=[elsewhere]),
        handoff=RecordingHandoff(source="kubernetes"),
        metrics=Metrics(CollectorRegistry()),
    )
    with pytest.raises(SourceError, match=f"a Role in namespace {elsewhere}"):
        await other.check()


async def test_cluster_wide_with_the_charts_cluster_role(kube: KubePeer, tmp_path: Path) -> None:
    ns, team = unique("rbac-cw"), unique("team")
    rules = chart_role_rules(None, tmp_path)
    _, kubeconfig = await service_account_kubeconfig(kube, ns, "observer", cluster_rules=rules)
    config = settings(kubeconfig, label_selector=f"team={team}")
    async with running(config) as run:
        handoff: RecordingHandoff = run.handoff
        uid = await new_pod(kube, ns, "p", labels(team=team))
        await set_pod_phase(kube, ns, "p", "Running")
        await until(lambda: len(handoff.of(pod_rid(uid))) == 2, "events under the ClusterRole")
    assert handoff.names(pod_rid(uid)) == ["pending", "running"]


async def test_forbidden_scope_is_retried_not_fatal(kube: KubePeer, tmp_path: Path) -> None:
    ns = unique("rbac-retry")
    rules = chart_role_rules(ns, tmp_path)
    _, kubeconfig = await service_account_kubeconfig(kube, ns, "observer", rules=rules)
    metrics = Metrics(CollectorRegistry())
    source = KubernetesSource(
        settings=settings(kubeconfig),
        handoff=RecordingHandoff(source="kubernetes"),
        metrics=metrics,
    )
    with capture_logs() as logs:
        task = asyncio.create_task(source.run())
        try:
            await until(lambda: reconnects(metrics, "error") >= 2, "two failed attempts")
            assert not task.done()
            assert not source.ready
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    failures = [e for e in logs if e["event"] == "watch_restarted"]
    assert "403" in failures[0]["error"]


async def test_check_explains_an_unreachable_apiserver(tmp_path: Path, kube: KubePeer) -> None:
    kubeconfig = write_kubeconfig(
        tmp_path / "kubeconfig",
        server=f"https://127.0.0.1:{free_port()}",
        ca_file=kube.ca_file,
        token="nope",
        user="nobody",
    )
    source = KubernetesSource(
        settings=settings(kubeconfig),
        handoff=RecordingHandoff(source="kubernetes"),
        metrics=Metrics(CollectorRegistry()),
    )
    with pytest.raises(SourceError, match="cannot reach the Kubernetes API"):
        await source.check()


async def test_check_explains_refused_credentials(tmp_path: Path, kube: KubePeer) -> None:
    kubeconfig = write_kubeconfig(
        tmp_path / "kubeconfig", server=kube.server, ca_file=kube.ca_file, token="bad", user="x"
    )
    source = KubernetesSource(
        settings=settings(kubeconfig),
        handoff=RecordingHandoff(source="kubernetes"),
        metrics=Metrics(CollectorRegistry()),
    )
    with pytest.raises(SourceError, match="refused the credentials"):
        await source.check()


# --- to a real Prefect server -------------------------------------------------------------


async def test_events_reach_a_real_prefect_server(kube: KubePeer, prefect: PrefectPeer) -> None:
    ns = unique("prefect")
    await ensure_namespace(kube, ns)
    flow_run = str(uuid.uuid4())
    emitter_settings = EmitterSettings(flush_interval_seconds=0.05, retry_max_seconds=1.0)
    metrics = Metrics(CollectorRegistry())
    sink = events_api_sink(PrefectSettings(api_url=prefect.api_url), emitter_settings)
    emitter = Emitter(sink=sink, settings=emitter_settings, metrics=metrics)
    emitter_task = asyncio.create_task(emitter.run())
    try:
        async with running(settings(kube.kubeconfig, namespaces=[ns]), handoff=emitter):
            uid = await new_pod(kube, ns, "delivered", labels(flow_run))
            await set_pod_phase(kube, ns, "delivered", "Running")
            await set_pod_phase(kube, ns, "delivered", "Succeeded")
            stored = await prefect.wait_for_events(
                expected_count=3, resource_ids=[f"prefect.kubernetes.pod.{uid}"]
            )
    finally:
        emitter.stop(5.0)
        await emitter_task
        await sink.aclose()

    stored.sort(key=lambda e: e["occurred"])
    names = [e["event"] for e in stored]
    assert sorted(names) == sorted(
        f"prefect.kubernetes.pod.{p}" for p in ("pending", "running", "succeeded")
    )
    by_name = {e["event"].rsplit(".", 1)[-1]: e for e in stored}
    assert {name: uuid.UUID(e["id"]) for name, e in by_name.items()} == {
        "pending": pod_id(uid, "Pending"),
        "running": pod_id(uid, "Running"),
        "succeeded": pod_id(uid, "Succeeded"),
    }
    related: Iterable[dict[str, str]] = by_name["running"]["related"]
    assert [r["prefect.resource.id"] for r in related] == [f"prefect.flow-run.{flow_run}"]
    assert by_name["running"]["resource"]["kubernetes.namespace"] == ns
    # The emitter chains one pod's events (all within 5 minutes here).
    assert by_name["pending"]["follows"] is None
    assert by_name["running"]["follows"] == by_name["pending"]["id"]
    assert by_name["succeeded"]["follows"] == by_name["running"]["id"]


# --- diagnosis ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def delivering_to(prefect: PrefectPeer, config: KubernetesSettings) -> AsyncIterator[None]:
    """The source running with the emitter in front of the real Prefect server."""
    emitter_settings = EmitterSettings(flush_interval_seconds=0.05, retry_max_seconds=1.0)
    sink = events_api_sink(PrefectSettings(api_url=prefect.api_url), emitter_settings)
    emitter = Emitter(sink=sink, settings=emitter_settings, metrics=Metrics(CollectorRegistry()))
    emitter_task = asyncio.create_task(emitter.run())
    try:
        async with running(config, handoff=emitter):
            yield
    finally:
        emitter.stop(5.0)
        await emitter_task
        await sink.aclose()


def prefect_kubernetes_id(uid: str, phase: str, *, diagnosis: str | None) -> uuid.UUID:
    """The formula of current prefect-kubernetes, written out here on its own."""
    fields = {"diagnosis": diagnosis, "phase": phase, "restart_count": 0, "uid": uid}
    return uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(fields, sort_keys=True))


async def stored_for(prefect: PrefectPeer, uid: str, *, count: int) -> list[tuple[str, Any, Any]]:
    """(event, diagnosis label, id) of the pod's stored events, by time of occurrence."""
    stored = await prefect.wait_for_events(
        expected_count=count, resource_ids=[f"prefect.kubernetes.pod.{uid}"]
    )
    stored.sort(key=lambda e: e["occurred"])
    return [
        (
            e["event"].removeprefix("prefect.kubernetes.pod."),
            e["resource"].get("kubernetes.diagnosis"),
            uuid.UUID(e["id"]),
        )
        for e in stored
    ]


async def test_diagnoses_reach_prefect_with_the_prefect_kubernetes_ids(
    kube: KubePeer, prefect: PrefectPeer
) -> None:
    ns = unique("diagnosis")
    await ensure_namespace(kube, ns)
    config = settings(kube.kubeconfig, namespaces=[ns], event_id_scheme="prefect-kubernetes")
    async with delivering_to(prefect, config):
        uid = await new_pod(kube, ns, "pull-then-oom", labels())
        await stored_for(prefect, uid, count=1)
        for reason in ("ErrImagePull", "ImagePullBackOff", "ErrImagePull"):
            await set_pod_phase(kube, ns, "pull-then-oom", "Pending", container_reason=reason)
        await stored_for(prefect, uid, count=2)
        await set_pod_phase(
            kube, ns, "pull-then-oom", "Failed", exit_code=137, container_reason="OOMKilled"
        )
        stored = await stored_for(prefect, uid, count=3)

    # One event per change of diagnosis: the kubelet's alternating pull reasons are one.
    # Both pending events occurred at the pod's creation: their order is not compared.
    assert len(stored) == 3
    assert set(stored) == {
        ("pending", None, prefect_kubernetes_id(uid, "Pending", diagnosis=None)),
        (
            "pending",
            "ImagePullError",
            prefect_kubernetes_id(uid, "Pending", diagnosis="ImagePullError"),
        ),
        ("failed", "OOMKilled", prefect_kubernetes_id(uid, "Failed", diagnosis="OOMKilled")),
    }


async def test_diagnoses_reach_prefect_as_labels_with_the_contract_ids(
    kube: KubePeer, prefect: PrefectPeer
) -> None:
    ns = unique("diagnosis")
    await ensure_namespace(kube, ns)
    uid = await new_pod(kube, ns, "pull-then-oom", labels())
    # Already backing off when the source lists it: its first event carries the diagnosis.
    await set_pod_phase(kube, ns, "pull-then-oom", "Pending", container_reason="ImagePullBackOff")
    async with delivering_to(prefect, settings(kube.kubeconfig, namespaces=[ns])):
        await stored_for(prefect, uid, count=1)
        await set_pod_phase(
            kube, ns, "pull-then-oom", "Failed", exit_code=137, container_reason="OOMKilled"
        )
        stored = await stored_for(prefect, uid, count=2)

    assert stored == [
        ("pending", "ImagePullError", pod_id(uid, "Pending")),
        ("failed", "OOMKilled", pod_id(uid, "Failed")),
    ]
