"""Leader election over a real Lease on the real kube-apiserver."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from infra_observer.config import KubernetesSettings, LeaderElectionSettings
from infra_observer.leader import LeaderElector, LeadershipLostError
from tests.peers.kube import KubePeer, ensure_namespace


@pytest.fixture
async def lease_name(kube: KubePeer) -> str:
    await ensure_namespace(kube, "leases")
    return f"lease-{uuid.uuid4().hex[:8]}"


def elector(kube: KubePeer, lease_name: str, identity: str, **timing: float) -> LeaderElector:
    settings = LeaderElectionSettings(
        enabled=True,
        lease_name=lease_name,
        namespace="leases",
        identity=identity,
        lease_duration_seconds=int(timing.get("duration", 3)),
        renew_deadline_seconds=timing.get("deadline", 2.0),
        retry_period_seconds=timing.get("retry", 0.3),
    )
    return LeaderElector(
        settings=settings, kubernetes=KubernetesSettings(kubeconfig=kube.kubeconfig)
    )


@pytest.fixture
async def electors() -> AsyncIterator[list[LeaderElector]]:
    made: list[LeaderElector] = []
    yield made
    for one in made:
        await one.aclose()


async def test_one_leader_and_release_hands_over(
    kube: KubePeer, lease_name: str, electors: list[LeaderElector]
) -> None:
    first, second = elector(kube, lease_name, "first"), elector(kube, lease_name, "second")
    electors += [first, second]
    await asyncio.wait_for(first.acquire(), 30)
    keeper = asyncio.create_task(first.keep())
    waiting = asyncio.create_task(second.acquire())
    await asyncio.sleep(6)  # twice the lease duration: the holder's renewals keep it
    assert not waiting.done()
    assert not keeper.done()
    keeper.cancel()
    await first.release()
    await asyncio.wait_for(waiting, 10)
    assert second.is_leader
    assert not first.is_leader


async def test_a_dead_leader_is_replaced_after_the_lease_expires(
    kube: KubePeer, lease_name: str, electors: list[LeaderElector]
) -> None:
    first, second = elector(kube, lease_name, "first"), elector(kube, lease_name, "second")
    electors += [first, second]
    await asyncio.wait_for(first.acquire(), 30)
    # The first never renews nor releases: as if it had been killed.
    await asyncio.wait_for(second.acquire(), 30)
    assert second.is_leader


async def test_a_leader_that_cannot_renew_steps_down(
    kube: KubePeer, lease_name: str, electors: list[LeaderElector]
) -> None:
    leader = elector(kube, lease_name, "leader", duration=6, deadline=2.0, retry=0.3)
    electors.append(leader)
    await asyncio.wait_for(leader.acquire(), 30)
    keeper = asyncio.create_task(leader.keep())
    await asyncio.to_thread(kube.stop_apiserver)
    try:
        with pytest.raises(LeadershipLostError, match="stepping down"):
            await asyncio.wait_for(keeper, 60)
        assert not leader.is_leader
    finally:
        await asyncio.to_thread(kube.restart_apiserver)
