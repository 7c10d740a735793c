"""Client certificates that rotate on disk, against a real kube-apiserver that trusts the
peer's client CA: a reload of the credentials must connect with the new certificate."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

import httpx
import orjson
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from infra_observer.kubernetes_api import KubeClient, read_body
from infra_observer.metrics import Metrics
from infra_observer.sources.kubernetes.source import KubernetesSource
from tests.handoff import RecordingHandoff
from tests.integration.test_kubernetes_source import (
    labels,
    new_pod,
    pod_rid,
    reconnects,
    settings,
    unique,
    until,
)
from tests.peers import KubePeer
from tests.peers.kube import ensure_namespace, write_kubeconfig

LIMITS = httpx.Timeout(10.0)


async def user_seen_by_the_apiserver(client: KubeClient) -> str:
    """The user the apiserver authenticated, as its refusal of a cluster-wide list names it."""
    response = await client.request("GET", "/api/v1/nodes", limits=LIMITS)
    body = orjson.loads(await read_body(response))
    assert response.status_code == 403, body
    found = re.search(r'User "([^"]+)"', body["message"])
    assert found, body
    return found[1]


def certificate_kubeconfig(kube: KubePeer, directory: Path, user: str, **options: int) -> Path:
    cert, key = kube.client_certificate(directory, user, **options)
    return write_kubeconfig(
        directory / "kubeconfig",
        server=kube.server,
        ca_file=kube.ca_file,
        user="rotating",
        client_certificate=(cert, key),
    )


async def test_a_reload_connects_with_the_rotated_client_certificate(
    kube: KubePeer, tmp_path: Path
) -> None:
    first, second = unique("first"), unique("second")
    kubeconfig = certificate_kubeconfig(kube, tmp_path, first)
    client = await KubeClient.connect(settings(kubeconfig))
    try:
        assert await user_seen_by_the_apiserver(client) == first  # keeps a connection open
        kube.client_certificate(tmp_path, second)  # renewed in place, as cert-manager does
        assert await user_seen_by_the_apiserver(client) == first  # nothing reloaded yet
        with capture_logs() as logs:
            await client.reload_credentials()
        assert [entry["event"] for entry in logs] == ["kubernetes_connection_renewed"]
        assert await user_seen_by_the_apiserver(client) == second
        with capture_logs() as logs:
            await client.reload_credentials()  # unchanged files: the same connections go on
        assert not logs
        assert await user_seen_by_the_apiserver(client) == second
    finally:
        await client.aclose()


async def test_a_watch_refused_for_an_expired_certificate_recovers_once_it_is_renewed(
    kube: KubePeer, tmp_path: Path
) -> None:
    ns = unique("rotated")
    await ensure_namespace(kube, ns)
    uid = await new_pod(kube, ns, "observed", labels())
    kubeconfig = certificate_kubeconfig(kube, tmp_path, unique("expired"), days=-1)
    metrics = Metrics(CollectorRegistry())
    handoff = RecordingHandoff(source="kubernetes")
    source = KubernetesSource(
        settings=settings(kubeconfig, namespaces=[ns]), handoff=handoff, metrics=metrics
    )
    task = asyncio.create_task(source.run())
    try:
        # The apiserver answers 401: the watch reloads the credentials, still expired.
        await until(lambda: reconnects(metrics, "error") >= 2, "refusals of the expired one")
        assert not source.ready
        kube.client_certificate(tmp_path, unique("renewed"), groups=["system:masters"])
        await until(lambda: source.ready, "the watch with the renewed certificate", limit=30)
        await until(lambda: bool(handoff.of(pod_rid(uid))), "the pod's event")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
