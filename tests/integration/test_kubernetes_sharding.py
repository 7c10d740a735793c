"""Sharding the Kubernetes source across replicas by pod uid, on the real apiserver."""

from __future__ import annotations

import asyncio

from tests.integration.test_kubernetes_source import (
    labels,
    new_pod,
    pod_rid,
    running,
    settings,
    unique,
    until,
)
from tests.peers import KubePeer
from tests.peers.kube import set_pod_phase


async def test_two_shards_report_every_pod_exactly_once(kube: KubePeer) -> None:
    namespace = unique("shards")
    names = [f"pod-{index}" for index in range(12)]
    uids = [await new_pod(kube, namespace, name, labels()) for name in names]
    shard = [
        settings(kube.kubeconfig, namespaces=[namespace], shard_count=2, shard_index=index)
        for index in (0, 1)
    ]
    async with running(shard[0]) as first, running(shard[1]) as second:
        handoffs = (first.handoff, second.handoff)

        def pending_everywhere() -> bool:
            return all(any(h.names(pod_rid(uid)) for h in handoffs) for uid in uids)

        await until(pending_everywhere, "a pending event for every pod")
        await asyncio.gather(*(set_pod_phase(kube, namespace, name, "Running") for name in names))

        def running_everywhere() -> bool:
            return all(any("running" in h.names(pod_rid(uid)) for h in handoffs) for uid in uids)

        await until(running_everywhere, "a running event for every pod")
        for uid in uids:
            reports = [h.names(pod_rid(uid)) for h in handoffs]
            assert sorted(reports, key=len) == [[], ["pending", "running"]], reports
        assert 0 < first.source.tracked_pods < len(uids)
        assert first.source.tracked_pods + second.source.tracked_pods == len(uids)
