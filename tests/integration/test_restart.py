"""A restart with existing pods: nothing the server stores is posted again, nothing is lost.

The daemon runs as users run it, against a real kube-apiserver and a Prefect server of the
test's own, through the recording proxy (passing everything) that counts what is posted.
Prefect 3.8.8's SQLite persister fails on a write batch made only of stored ids and may drop
new events with it, so what is posted again matters, not only what ends up stored. The
server's publisher also drops an id it saw within the last five minutes, but remembers only
the last 1,000: before the restart, 1,000 other events stand for a server that has been busy
(or for a restart more than five minutes after the pods' events were delivered).
The same scenario with 1,000 pods: `python -m benchmarks.restart` (docs/reliability.md).
When the lookup fails, the events are sent: see test_stored_lookup.py.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_daemon import Daemon, daemons, kube_env, unique
from tests.integration.test_faults import logged, metric_total, ready_daemon
from tests.peers.faulty_proxy import FaultyProxy
from tests.peers.kube import KubePeer, create_pod, delete_pod, set_pod_phase
from tests.peers.prefect import PrefectPeer, make_event

__all__ = ["daemons"]  # the fixture, imported so pytest finds it here

POD_COUNT = 50
OTHER_EVENTS = 1_000
STORED_WAIT_SECONDS = 20


@pytest.fixture
async def proxy(prefect_isolated: PrefectPeer) -> AsyncIterator[FaultyProxy]:
    started = await FaultyProxy(prefect_isolated.api_url).start()
    yield started
    await started.stop()


async def create_pods(kube: KubePeer, namespace: str, *, count: int) -> dict[str, str]:
    """Labelled Pending pods, name -> resource id."""
    created = await asyncio.gather(
        *(
            create_pod(kube, namespace, f"p{i}", {"prefect.io/flow-run-id": str(uuid.uuid4())})
            for i in range(count)
        )
    )
    return {pod.metadata.name: f"prefect.kubernetes.pod.{pod.metadata.uid}" for pod in created}


async def other_events_stored(prefect: PrefectPeer, count: int) -> None:
    """`count` events of other resources, posted and stored."""
    name = f"test.other.{uuid.uuid4().hex[:8]}"
    events = [make_event(name, f"test.other.{i}") for i in range(count)]
    for start in range(0, count, 200):
        response = await prefect.post_events(events[start : start + 200])
        assert response.status_code == 204, response.text
    await prefect.wait_for_events(expected_count=count, names=[name], timeout=60, settle=0)


async def stored_after_settling(
    prefect: PrefectPeer, resource_ids: list[str], *, expected: int
) -> list[dict[str, Any]]:
    """What the server stores once `expected` events are there (or the wait ran out),
    read again a few seconds later so that late failures of the persister show."""
    deadline = time.monotonic() + STORED_WAIT_SECONDS
    while time.monotonic() < deadline:
        if len(await prefect.read_events(resource_ids=resource_ids)) >= expected:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)
    return await prefect.read_events(resource_ids=resource_ids)


async def test_a_restart_posts_nothing_stored_again_and_every_new_event_is_stored(
    kube: KubePeer,
    prefect_isolated: PrefectPeer,
    proxy: FaultyProxy,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    prefect = prefect_isolated  # the current code posts stored ids: kept off the shared server
    namespace = unique("restart")
    pods = await create_pods(kube, namespace, count=POD_COUNT)
    resource_ids = list(pods.values())
    env = kube_env(kube, namespace, PREFECT_API_URL=proxy.api_url)
    first = await ready_daemon(env, tmp_path / "first.log", daemons)
    await prefect.wait_for_events(
        expected_count=POD_COUNT, resource_ids=resource_ids, timeout=60, settle=0
    )
    assert await asyncio.to_thread(first.stop, signal.SIGTERM) == 0
    await other_events_stored(prefect, OTHER_EVENTS)

    restarted = time.monotonic()
    second = await ready_daemon(env, tmp_path / "second.log", daemons)
    await asyncio.gather(*(set_pod_phase(kube, namespace, name, "Running") for name in pods))
    stored = await stored_after_settling(prefect, resource_ids, expected=2 * POD_COUNT)

    posted = sum(seen.events for seen in proxy.posts(since=restarted))
    reads = [seen for seen in proxy.seen if seen.path.endswith("/events/filter")]
    by_resource: dict[str, list[str]] = {resource: [] for resource in resource_ids}
    for event in stored:
        by_resource[event["resource"]["prefect.resource.id"]].append(event["event"])
    incomplete = {
        resource: names
        for resource, names in by_resource.items()
        if sorted(names) != ["prefect.kubernetes.pod.pending", "prefect.kubernetes.pod.running"]
    }
    assert {
        "duplicates posted after the restart": posted - POD_COUNT,
        "pods without both events stored once": len(incomplete),
        "server log lines dropping events": prefect.dropped_batches(),
    } == {
        "duplicates posted after the restart": 0,
        "pods without both events stored once": 0,
        "server log lines dropping events": [],
    }, second.logs_text()
    # The stored Pending event is each pod's latest: the new event follows it.
    by_id = {event["id"]: event for event in stored}
    for event in stored:
        if event["event"] == "prefect.kubernetes.pod.running":
            before = by_id.get(event["follows"], {})
            assert before.get("event") == "prefect.kubernetes.pod.pending", event
    # One read per batch of up to 50 ids, never one per pod.
    assert 1 <= len(reads) <= 2
    metrics = (await asyncio.to_thread(second.get, "/metrics")).text
    assert metric_total(metrics, "infra_observer_events_duplicate_total") == POD_COUNT
    assert not logged(second, "stored_lookup_failed")
    assert await asyncio.to_thread(second.stop) == 0
    await asyncio.gather(*(delete_pod(kube, namespace, name) for name in pods))
