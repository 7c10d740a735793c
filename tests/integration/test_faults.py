"""Faults injected around `infra-observer run`, each checked against what the real Prefect
server stored: every expected event exactly once, with its `follows` chain.

The events API is reached through `FaultyProxy` (a real HTTP proxy on loopback in front of
the real Prefect server) whose mode changes while pods keep changing phase in the real
kube-apiserver. Source-level faults (apiserver restart, 410 Gone, stalled watch, dockerd
restart, SQS redelivery) are tested by each source's own integration tests; see
docs/reliability.md for the whole table.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_daemon import Daemon, daemons, kube_env, unique
from tests.peers.faulty_proxy import FaultyProxy, Mode, Scripted
from tests.peers.kube import KubePeer, create_pod, delete_pod, set_pod_phase
from tests.peers.prefect import PrefectPeer

__all__ = ["daemons"]  # the fixture, imported so pytest finds it here

FAULTS = (Mode.REFUSE, Mode.ERROR_500, Mode.TOO_MANY_429, Mode.HANG)
FAULT_SECONDS = 25.0
"""How long each fault lasts while pods keep changing (the four: 100 s)."""
STEP_SECONDS = 1.5
RETRY_AFTER_SECONDS = 2
REQUEST_TIMEOUT_SECONDS = 2
POD_PREFIX = "prefect.kubernetes.pod."


@pytest.fixture
async def proxy(prefect: PrefectPeer) -> AsyncIterator[FaultyProxy]:
    started = await FaultyProxy(prefect.api_url, retry_after_seconds=RETRY_AFTER_SECONDS).start()
    yield started
    await started.stop()


@dataclass
class Pod:
    name: str
    uid: str
    final: str
    """Succeeded or Failed."""
    phases: list[str] = field(default_factory=lambda: ["Pending"])

    @property
    def resource_id(self) -> str:
        return POD_PREFIX + self.uid

    @property
    def done(self) -> bool:
        return self.phases[-1] == self.final

    def next_phase(self) -> str:
        return "Running" if self.phases[-1] == "Pending" else self.final


class PodDriver:
    """Creates labelled pods and moves each through Pending -> Running -> Succeeded|Failed."""

    def __init__(self, kube: KubePeer, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.pods: list[Pod] = []

    async def create(self) -> Pod:
        name = f"p{len(self.pods)}"
        labels = {"prefect.io/flow-run-id": str(uuid.uuid4())}
        created = await create_pod(self.kube, self.namespace, name, labels)
        pod = Pod(name, created.metadata.uid, "Failed" if len(self.pods) % 3 == 2 else "Succeeded")
        self.pods.append(pod)
        return pod

    async def step(self) -> None:
        """Advance every pod that is not finished by one phase, then start a new pod."""
        for pod in self.pods:
            if not pod.done:
                await self._advance(pod)
        await self.create()

    async def finish(self) -> None:
        while not all(pod.done for pod in self.pods):
            for pod in self.pods:
                if not pod.done:
                    await self._advance(pod)

    async def _advance(self, pod: Pod) -> None:
        phase = pod.next_phase()
        await set_pod_phase(self.kube, self.namespace, pod.name, phase)
        pod.phases.append(phase)

    def expected(self) -> dict[str, list[str]]:
        """resource id -> event names in the order they happened."""
        return {
            pod.resource_id: [f"prefect.kubernetes.pod.{phase.lower()}" for phase in pod.phases]
            for pod in self.pods
        }

    async def delete_all(self) -> None:
        for pod in self.pods:
            await delete_pod(self.kube, self.namespace, pod.name)


def assert_stored_once_and_chained(
    stored: Sequence[Mapping[str, Any]], expected: Mapping[str, list[str]]
) -> None:
    by_resource: dict[str, list[Mapping[str, Any]]] = {}
    for event in stored:
        by_resource.setdefault(event["resource"]["prefect.resource.id"], []).append(event)
    assert sorted(by_resource) == sorted(expected)
    for resource_id, names in expected.items():
        events = by_resource[resource_id]
        got = sorted(event["event"] for event in events)
        assert got == sorted(names), f"{resource_id}: stored {got}, expected {names} once each"
        by_name = {event["event"]: event for event in events}
        assert by_name[names[0]]["follows"] is None, resource_id
        for before, after in itertools.pairwise(names):
            assert by_name[after]["follows"] == by_name[before]["id"], (resource_id, after)


async def stored_events(
    prefect: PrefectPeer,
    expected: Mapping[str, list[str]],
    *,
    timeout: float = 120,  # noqa: ASYNC109 - a bounded poll
) -> list[dict[str, Any]]:
    count = sum(len(names) for names in expected.values())
    return await prefect.wait_for_events(
        expected_count=count, resource_ids=list(expected), timeout=timeout, settle=3
    )


def metric_total(metrics_text: str, name: str) -> float:
    """Sum of every sample of one metric in the Prometheus text format."""
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(metrics_text))


async def wait_for_metric(daemon: Daemon, name: str, at_least: float) -> None:
    deadline = time.monotonic() + 60
    while True:
        text = (await asyncio.to_thread(daemon.get, "/metrics")).text
        if metric_total(text, name) >= at_least:
            return
        assert time.monotonic() < deadline, f"{name} < {at_least}:\n{daemon.logs_text()}"
        await asyncio.sleep(0.3)


def logged(daemon: Daemon, event: str) -> list[dict[str, Any]]:
    return [entry for entry in daemon.logs() if entry.get("event") == event]


async def ready_daemon(env: dict[str, str], log_path: Path, daemons: list[Daemon]) -> Daemon:
    """A daemon started (stopped by the `daemons` fixture) and ready."""
    daemon = Daemon(env, log_path)
    daemons.append(daemon)
    await asyncio.to_thread(daemon.wait_ready)
    return daemon


async def until_events_posted(proxy: FaultyProxy, daemon: Daemon) -> None:
    """Until a POST carrying events reached the proxy (whatever the proxy answered)."""
    deadline = time.monotonic() + 60
    while not any(seen.events for seen in proxy.posts()):
        assert time.monotonic() < deadline, daemon.logs_text()
        await asyncio.sleep(0.2)


async def test_events_api_faults_lose_nothing_and_store_each_event_once(
    kube: KubePeer,
    prefect: PrefectPeer,
    proxy: FaultyProxy,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    """Refused connections, 500s, 429s and a hanging server, one after the other while pods
    keep changing phase; after recovery every event is stored once, chained."""
    namespace = unique("faults")
    env = kube_env(
        kube,
        namespace,
        PREFECT_API_URL=proxy.api_url,
        INFRA_OBSERVER_EMITTER_REQUEST_TIMEOUT_SECONDS=str(REQUEST_TIMEOUT_SECONDS),
    )
    daemon = await ready_daemon(env, tmp_path / "daemon.log", daemons)
    pods = PodDriver(kube, namespace)
    windows: dict[Mode, tuple[float, float]] = {}
    for mode in FAULTS:
        await proxy.set_mode(mode)
        started = time.monotonic()
        while time.monotonic() - started < FAULT_SECONDS:
            await pods.step()
            await asyncio.sleep(STEP_SECONDS)
        windows[mode] = (started, time.monotonic())
        # Alive throughout, and not ready while it cannot deliver.
        assert (await asyncio.to_thread(daemon.get, "/healthz")).status_code == 200
        assert (await asyncio.to_thread(daemon.get, "/readyz")).status_code == 503, mode

    await proxy.set_mode(Mode.PASS)
    await pods.finish()
    expected = pods.expected()
    stored = await stored_events(prefect, expected)
    assert_stored_once_and_chained(stored, expected)
    assert len(expected) >= len(FAULTS) * FAULT_SECONDS / (STEP_SECONDS + 5)

    # Each fault was met: the failures are logged and counted, and 429s were honoured.
    errors = " ".join(str(entry.get("error")) for entry in logged(daemon, "delivery_failed"))
    assert "is the Prefect server up" in errors  # refused
    assert "answered 500" in errors
    assert "answered 429" in errors
    assert "timed out" in errors  # hung
    throttled = proxy.posts(*windows[Mode.TOO_MANY_429])
    length = windows[Mode.TOO_MANY_429][1] - windows[Mode.TOO_MANY_429][0]
    # Retry-After (2 s) is longer than the configured longest backoff (1 s): it sets the pace.
    assert 1 <= len(throttled) <= length / RETRY_AFTER_SECONDS + 2
    assert not proxy.posts(*windows[Mode.REFUSE])
    assert (await asyncio.to_thread(daemon.get, "/readyz")).status_code == 200
    assert await asyncio.to_thread(daemon.stop) == 0
    assert logged(daemon, "emitter_drained")
    await pods.delete_all()


async def test_answers_the_events_api_does_not_give_lose_nothing(
    kube: KubePeer,
    prefect: PrefectPeer,
    proxy: FaultyProxy,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    """A WAF's 405, a proxy's 407 and a 400 that is not the server's validation answer, in
    front of the real server while pods change: nothing is rejected, every event is stored
    once, chained."""
    namespace = unique("statuses")
    env = kube_env(kube, namespace, PREFECT_API_URL=proxy.api_url)
    daemon = await ready_daemon(env, tmp_path / "daemon.log", daemons)
    proxy.answer_next(
        Scripted(405, b"<html><h1>405 Not Allowed</h1></html>", "text/html"),
        Scripted(407, b"Proxy Authentication Required"),
        Scripted(400, b"<html><h1>Request blocked</h1></html>", "text/html"),
    )
    pods = PodDriver(kube, namespace)
    for _ in range(3):
        await pods.step()
        await asyncio.sleep(STEP_SECONDS)
    await pods.finish()
    expected = pods.expected()
    stored = await stored_events(prefect, expected)
    assert_stored_once_and_chained(stored, expected)
    errors = [str(entry.get("error")) for entry in logged(daemon, "delivery_failed")]
    for status in (405, 407, 400):
        assert any(f"/events answered {status}," in error for error in errors), errors
    assert not logged(daemon, "event_rejected")
    assert await asyncio.to_thread(daemon.stop) == 0
    await pods.delete_all()


async def test_sigterm_with_a_hanging_sink_exits_after_the_drain_deadline(
    kube: KubePeer,
    proxy: FaultyProxy,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    namespace = unique("drain")
    env = kube_env(
        kube,
        namespace,
        PREFECT_API_URL=proxy.api_url,
        INFRA_OBSERVER_EMITTER_DRAIN_SECONDS="3",
    )
    daemon = await ready_daemon(env, tmp_path / "daemon.log", daemons)
    await proxy.set_mode(Mode.HANG)
    pods = PodDriver(kube, namespace)
    for _ in range(3):
        await pods.create()
    await wait_for_metric(daemon, "infra_observer_events_observed_total", 3)
    await until_events_posted(proxy, daemon)

    signalled = time.monotonic()
    # The drain deadline (3 s) also cuts the POST in flight; 60 s only bounds the wait.
    code = await asyncio.to_thread(daemon.stop, signal.SIGTERM, 60)
    took = time.monotonic() - signalled
    assert code == 0, daemon.logs_text()
    (stopped,) = logged(daemon, "emitter_stopped_with_undelivered_events")
    assert stopped["count"] == 3
    assert stopped["level"] == "error"
    assert logged(daemon, "stopped")
    print(
        f"SIGTERM to exit with a hanging sink: {took:.1f} s"
    )  # shown with -s; the figure in docs/reliability.md
    await pods.delete_all()


async def test_two_active_replicas_without_leader_election_store_each_event_once(
    kube: KubePeer, prefect_isolated: PrefectPeer, daemons: list[Daemon], tmp_path: Path
) -> None:
    prefect = prefect_isolated  # both replicas post every id: kept off the shared server
    namespace = unique("replicas")
    env = kube_env(kube, namespace, **prefect.env())
    replicas = [Daemon(env, tmp_path / f"replica-{index}.log") for index in range(2)]
    daemons.extend(replicas)
    for replica in replicas:
        await asyncio.to_thread(replica.wait_ready)
    pods = PodDriver(kube, namespace)
    for _ in range(3):
        await pods.step()
    await pods.finish()
    expected = pods.expected()
    count = sum(len(names) for names in expected.values())
    # Both replicas really delivered everything: the server kept one copy of each id.
    for replica in replicas:
        await wait_for_metric(replica, "infra_observer_events_emitted_total", count)
    stored = await stored_events(prefect, expected)
    assert_stored_once_and_chained(stored, expected)
    for replica in replicas:
        assert await asyncio.to_thread(replica.stop) == 0
    await pods.delete_all()


async def test_refused_credentials_name_the_variable_without_a_retry_storm(
    kube: KubePeer, prefect_basic_auth: PrefectPeer, daemons: list[Daemon], tmp_path: Path
) -> None:
    """A real Prefect server with basic auth and a wrong PREFECT_API_AUTH_STRING: one slow
    attempt per longest backoff, the log names the variable; fixed, nothing was lost."""
    namespace = unique("auth")
    retry_max = 2.0
    window = 12.0
    counting = await FaultyProxy(prefect_basic_auth.api_url).start()
    try:
        env = kube_env(
            kube,
            namespace,
            PREFECT_API_URL=counting.api_url,
            PREFECT_API_AUTH_STRING="observer:not-the-password",
            INFRA_OBSERVER_EMITTER_DRAIN_SECONDS="1",
            INFRA_OBSERVER_EMITTER_SPOOL_DIR=str(tmp_path / "spool"),
        )
        env["INFRA_OBSERVER_EMITTER_RETRY_MAX_SECONDS"] = str(retry_max)
        wrong = Daemon(env, tmp_path / "wrong.log")
        daemons.append(wrong)
        pods = PodDriver(kube, namespace)
        await pods.create()
        await until_events_posted(counting, wrong)
        first = next(seen.at for seen in counting.posts() if seen.events)
        await asyncio.sleep(window)
        attempts = counting.posts(since=first, until=first + window)
        # One attempt per retry_max seconds at most (+1 for the first, +1 for rounding).
        assert 2 <= len(attempts) <= window / retry_max + 2, len(attempts)
        assert (await asyncio.to_thread(wrong.get, "/readyz")).status_code == 503
        assert await asyncio.to_thread(wrong.stop) == 0

        failures = logged(wrong, "delivery_failed")
        assert failures
        assert all(entry["level"] == "error" for entry in failures)
        assert all("PREFECT_API_AUTH_STRING" in str(entry["error"]) for entry in failures)
        assert "not-the-password" not in wrong.log_path.read_text()

        # The operator fixes the variable: the spooled event is delivered, once.
        env["PREFECT_API_AUTH_STRING"] = str(prefect_basic_auth.auth_string)
        fixed = await ready_daemon(env, tmp_path / "fixed.log", daemons)
        expected = pods.expected()
        stored = await stored_events(prefect_basic_auth, expected, timeout=60)
        assert_stored_once_and_chained(stored, expected)
        assert await asyncio.to_thread(fixed.stop) == 0
        await pods.delete_all()
    finally:
        await counting.stop()


async def test_a_full_queue_makes_the_source_wait_and_loses_nothing(
    kube: KubePeer,
    prefect: PrefectPeer,
    proxy: FaultyProxy,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    """A queue of one event and a failing sink: the watch waits (backpressure), the bound
    is logged and counted, and every change still arrives once the sink is back."""
    namespace = unique("queue")
    env = kube_env(
        kube, namespace, PREFECT_API_URL=proxy.api_url, INFRA_OBSERVER_EMITTER_QUEUE_SIZE="1"
    )
    daemon = await ready_daemon(env, tmp_path / "daemon.log", daemons)
    await proxy.set_mode(Mode.ERROR_500)
    pods = PodDriver(kube, namespace)
    # Changes that arrive within one flush interval all join the batch that is failing;
    # the queue fills only with those that come later, so keep the pods moving until it does.
    for _ in range(20):
        await pods.step()
        metrics = (await asyncio.to_thread(daemon.get, "/metrics")).text
        if metric_total(metrics, "infra_observer_bound_hits_total") >= 1:
            break
        await asyncio.sleep(0.3)
    await wait_for_metric(daemon, "infra_observer_bound_hits_total", 1)
    assert logged(daemon, "emitter_queue_full")

    await proxy.set_mode(Mode.PASS)
    await pods.finish()
    expected = pods.expected()
    stored = await stored_events(prefect, expected)
    assert_stored_once_and_chained(stored, expected)
    metrics = (await asyncio.to_thread(daemon.get, "/metrics")).text
    assert 'infra_observer_bound_hits_total{bound="queue"}' in metrics
    assert await asyncio.to_thread(daemon.stop) == 0
    await pods.delete_all()


async def test_sigkill_without_spool_reports_the_current_phases_after_restart(
    kube: KubePeer,
    prefect: PrefectPeer,
    proxy: FaultyProxy,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    """Without a spool, what was queued at a SIGKILL is gone; the restarted daemon's listing
    reports each pod's current phase (same ids), so only the phases passed through while
    nothing could be delivered are missing. With the spool nothing is: see
    test_daemon.py::test_sigkill_with_spool_loses_nothing_and_stores_no_duplicates."""
    namespace = unique("nospool")
    env = kube_env(kube, namespace, PREFECT_API_URL=proxy.api_url)
    first = await ready_daemon(env, tmp_path / "first.log", daemons)
    pods = PodDriver(kube, namespace)
    delivered = await pods.create()  # delivered before the fault: pending
    await prefect.wait_for_events(expected_count=1, resource_ids=[delivered.resource_id])
    await proxy.set_mode(Mode.REFUSE)
    await pods.step()  # p0 runs, p1 is created
    await pods.step()  # p0 succeeds, p1 runs, p2 is created: all queued in memory only
    await wait_for_metric(first, "infra_observer_events_observed_total", 6)
    await asyncio.to_thread(first.stop, signal.SIGKILL)

    await proxy.set_mode(Mode.PASS)
    second = await ready_daemon(env, tmp_path / "second.log", daemons)
    p0, p1, p2 = pods.pods
    now = {
        p0.resource_id: ["prefect.kubernetes.pod.pending", "prefect.kubernetes.pod.succeeded"],
        p1.resource_id: ["prefect.kubernetes.pod.running"],
        p2.resource_id: ["prefect.kubernetes.pod.pending"],
    }
    stored = await stored_events(prefect, now)
    # Lost with the process: p0 running and p1 pending, passed through while queued.
    got = sorted((event["resource"]["prefect.resource.id"], event["event"]) for event in stored)
    assert got == sorted((resource, name) for resource, names in now.items() for name in names)
    # The restarted process has no memory of the pending event: no chain across the kill.
    succeeded = next(e for e in stored if e["event"] == "prefect.kubernetes.pod.succeeded")
    assert succeeded["follows"] is None
    assert await asyncio.to_thread(second.stop) == 0
    await pods.delete_all()
