"""Smoke tests of the real peers and of the helpers other integration tests build on."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import uuid

import httpx
import pytest

from tests.peers import DockerPeer, KubePeer, MotoPeer, PrefectPeer, RegistryPeer
from tests.peers._util import manifest, provisioned
from tests.peers.docker import oom_command
from tests.peers.kube import (
    container_status,
    create_pod,
    delete_pod,
    evict_pod,
    read_pod,
    service_account_kubeconfig,
    set_pod_phase,
)
from tests.peers.moto import parse_messages
from tests.peers.prefect import TEST_AUTH_STRING, make_event

pytestmark = pytest.mark.peers


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- kube


def test_kube_version_is_the_selected_one(kube: KubePeer) -> None:
    selected = os.environ.get("INFRA_OBSERVER_KUBE_VERSION") or manifest()["kube_version"]
    assert kube.version == "v" + selected.removeprefix("v")


async def test_kube_pod_driven_running_then_succeeded(kube: KubePeer) -> None:
    namespace, name = unique("smoke"), "pod-a"
    labels = {"prefect.io/flow-run-id": str(uuid.uuid4())}
    pod = await create_pod(kube, namespace, name, labels)
    assert pod.status.phase == "Pending"
    assert pod.metadata.labels == labels

    started = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    await set_pod_phase(kube, namespace, name, "Running", started_at=started, restart_count=2)
    pod = await read_pod(kube, namespace, name)
    assert pod.status.phase == "Running"
    (status,) = pod.status.container_statuses
    assert status.restart_count == 2
    assert status.state.running.started_at == started

    await set_pod_phase(kube, namespace, name, "Succeeded", started_at=started, restart_count=2)
    pod = await read_pod(kube, namespace, name)
    assert pod.status.phase == "Succeeded"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (0, "Completed")

    await delete_pod(kube, namespace, name)
    from kubernetes_asyncio.client.exceptions import ApiException

    with pytest.raises(ApiException) as gone:
        await read_pod(kube, namespace, name)
    assert gone.value.status == 404


async def test_kube_failed_and_evicted_statuses(kube: KubePeer) -> None:
    namespace = unique("smoke")
    await create_pod(kube, namespace, "failed", {"app": "x"}, init_containers=["init"])
    init_done = container_status("init", state="terminated", exit_code=0)
    await set_pod_phase(
        kube,
        namespace,
        "failed",
        "Failed",
        exit_code=3,
        container_reason="Error",
        init_container_statuses=[init_done],
    )
    pod = await read_pod(kube, namespace, "failed")
    assert pod.status.phase == "Failed"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 3
    assert pod.status.init_container_statuses[0].state.terminated.reason == "Completed"

    await create_pod(kube, namespace, "evicted", {"app": "x"}, node_name="node-1")
    await set_pod_phase(kube, namespace, "evicted", "Running")
    await evict_pod(kube, namespace, "evicted")
    pod = await read_pod(kube, namespace, "evicted")
    assert (pod.status.phase, pod.status.reason) == ("Failed", "Evicted")
    (condition,) = [c for c in pod.status.conditions if c.type == "DisruptionTarget"]
    assert condition.reason == "EvictionByEvictionAPI"
    # A scheduled pod with no kubelet only goes away with grace period 0.
    await delete_pod(kube, namespace, "evicted")


async def test_kube_watch_from_compacted_resource_version_is_410(kube: KubePeer) -> None:
    from kubernetes_asyncio import client, watch
    from kubernetes_asyncio.client.exceptions import ApiException

    namespace = unique("smoke")
    pod = await create_pod(kube, namespace, "old", {"app": "x"})
    old_rv = pod.metadata.resource_version
    for phase in ("Running", "Succeeded"):
        await set_pod_phase(kube, namespace, "old", phase)
    assert kube.compact_etcd() > int(old_rv)

    async def watch_from(resource_version: str) -> None:
        async with kube.api_client() as api:
            stream = watch.Watch()
            try:
                async with asyncio.timeout(20):
                    async for _ in stream.stream(
                        client.CoreV1Api(api).list_namespaced_pod,
                        namespace,
                        resource_version=resource_version,
                        timeout_seconds=10,
                    ):
                        pass
            finally:
                stream.stop()

    with pytest.raises(ApiException) as gone:
        await watch_from(old_rv)
    assert gone.value.status == 410


async def test_kube_apiserver_restart_keeps_objects(kube: KubePeer) -> None:
    namespace = unique("smoke")
    pod = await create_pod(kube, namespace, "survivor", {"app": "x"})
    await asyncio.to_thread(kube.restart_apiserver)
    again = await read_pod(kube, namespace, "survivor")
    assert again.metadata.uid == pod.metadata.uid


async def test_kube_service_account_has_exactly_its_role(kube: KubePeer) -> None:
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException

    namespace, elsewhere = unique("rbac"), unique("other")
    await create_pod(kube, namespace, "mine", {"app": "x"})
    await create_pod(kube, elsewhere, "theirs", {"app": "x"})
    token, kubeconfig = await service_account_kubeconfig(
        kube,
        namespace,
        "observer",
        rules=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
    )
    assert token
    async with kube.api_client(kubeconfig) as api:
        pods = client.CoreV1Api(api)
        listed = await pods.list_namespaced_pod(namespace)
        assert [p.metadata.name for p in listed.items] == ["mine"]
        with pytest.raises(ApiException) as forbidden:
            await pods.list_namespaced_pod(elsewhere)
        assert forbidden.value.status == 403
        with pytest.raises(ApiException) as no_write:
            await pods.delete_namespaced_pod("mine", namespace)
        assert no_write.value.status == 403


def test_helm_talks_to_the_apiserver(kube: KubePeer) -> None:
    assert kube.helm("version", "--short").stdout.startswith("v3.")
    namespace = unique("helm")
    kube.helm("list", "--namespace", namespace, "--output", "json")


# ---------------------------------------------------------------- docker


async def test_docker_exit_code_and_labels(dockerd: DockerPeer) -> None:
    labels = {"io.prefect.flow-run-id": str(uuid.uuid4())}
    container = await dockerd.run_container(["sh", "-c", "sleep 0.2; exit 3"], labels=labels)
    try:
        assert await dockerd.wait_exit(container) == 3
        info = await dockerd.inspect(container)
        assert info["State"]["Status"] == "exited"
        assert info["State"]["ExitCode"] == 3
        assert info["Config"]["Labels"] == labels
        found = await dockerd.list_containers(
            label=f"io.prefect.flow-run-id={labels['io.prefect.flow-run-id']}"
        )
        assert [c["Id"] for c in found] == [container]
    finally:
        await dockerd.remove(container)


async def test_docker_oom_kill(dockerd: DockerPeer) -> None:
    container = await dockerd.run_container(oom_command(), memory=16 * 1024 * 1024)
    try:
        assert await dockerd.wait_exit(container, timeout=60) == 137
        # The OOM flag can trail the exit by a moment (it comes from a separate event).
        state = (await dockerd.wait_oom_killed(container))["State"]
        assert state["OOMKilled"] is True
        assert state["ExitCode"] == 137
    finally:
        await dockerd.remove(container)


async def test_docker_pause_unpause_kill(dockerd: DockerPeer) -> None:
    container = await dockerd.run_container(["sleep", "60"])
    try:
        await dockerd.pause(container)
        assert (await dockerd.inspect(container))["State"]["Status"] == "paused"
        await dockerd.unpause(container)
        assert (await dockerd.inspect(container))["State"]["Status"] == "running"
        await dockerd.kill(container)
        assert await dockerd.wait_exit(container) == 137
    finally:
        await dockerd.remove(container)


async def test_dockerd_restart(dockerd: DockerPeer) -> None:
    before = await dockerd.run_container(["sleep", "60"])
    try:
        await asyncio.to_thread(dockerd.restart)
        # The daemon stops containers on shutdown; they are still listed afterwards.
        info = await dockerd.inspect(before)
        assert info["State"]["Status"] == "exited"
        after = await dockerd.run_container(["sh", "-c", "exit 0"])
        assert await dockerd.wait_exit(after) == 0
        await dockerd.remove(after)
    finally:
        await dockerd.remove(before)


# ---------------------------------------------------------------- registry


def test_registry_takes_a_push_from_dockerd(registry: RegistryPeer, dockerd: DockerPeer) -> None:
    """dockerd pushes to the loopback registry over plain HTTP, and the API lists the tag."""
    tag = uuid.uuid4().hex[:8]
    reference = f"{registry.address}/smoke/busybox:{tag}"
    env = {"PATH": "/usr/bin:/bin", **dockerd.env()}
    for args in (("tag", dockerd.image, reference), ("push", reference)):
        subprocess.run(
            [str(provisioned("docker")), *args],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
    assert tag in registry.get("/v2/smoke/busybox/tags/list").json()["tags"]
    assert registry.manifest("smoke/busybox", tag)["layers"]


# ---------------------------------------------------------------- moto


def test_sqs_envelope_round_trip(moto: MotoPeer) -> None:
    queue = moto.create_queue(unique("ecs-events"), dlq=True)
    task_arn = f"arn:aws:ecs:us-east-1:{moto.account_id}:task/c/{uuid.uuid4().hex}"
    event_id = str(uuid.uuid4())
    sent = moto.send_task_state_change(
        queue["url"], task_arn=task_arn, last_status="STOPPED", version=4, event_id=event_id
    )
    sqs = moto.client("sqs")
    received = sqs.receive_message(QueueUrl=queue["url"], WaitTimeSeconds=2, MaxNumberOfMessages=10)
    (body,) = parse_messages(received["Messages"])
    assert body == sent
    assert body["id"] == event_id
    assert body["detail-type"] == "ECS Task State Change"
    assert body["detail"]["lastStatus"] == "STOPPED"
    assert body["detail"]["version"] == 4
    redrive = json.loads(
        sqs.get_queue_attributes(QueueUrl=queue["url"], AttributeNames=["RedrivePolicy"])[
            "Attributes"
        ]["RedrivePolicy"]
    )
    assert redrive["deadLetterTargetArn"] == queue["dlq_arn"]


def test_ecs_task_tags(moto: MotoPeer) -> None:
    flow_run_id = str(uuid.uuid4())
    moto.pin_task_status()
    try:
        task = moto.run_fargate_task(cluster="smoke", tags={"prefect.io/flow-run-id": flow_run_id})
        described = moto.describe_task("smoke", task["taskArn"])
        assert {"key": "prefect.io/flow-run-id", "value": flow_run_id} in described["tags"]
        # Pinned: reading it again does not move the status on.
        assert moto.describe_task("smoke", task["taskArn"])["lastStatus"] == described["lastStatus"]
    finally:
        moto.unpin_task_status()


# ---------------------------------------------------------------- prefect


async def test_prefect_event_read_back_by_id(prefect: PrefectPeer) -> None:
    event = make_event("infra-observer.smoke", f"infra-observer.smoke.{uuid.uuid4()}")
    response = await prefect.post_events([event])
    assert response.status_code == 204
    (stored,) = await prefect.wait_for_events(expected_count=1, ids=[event["id"]])
    assert stored["id"] == event["id"]
    assert stored["event"] == "infra-observer.smoke"
    assert stored["resource"]["prefect.resource.id"] == event["resource"]["prefect.resource.id"]


async def test_prefect_read_events_sees_old_and_slightly_future_events(
    prefect: PrefectPeer,
) -> None:
    resource = f"infra-observer.smoke.{uuid.uuid4()}"
    now = dt.datetime.now(dt.UTC)
    events = [
        make_event("infra-observer.old", resource, occurred=dt.datetime(2021, 5, 6, tzinfo=dt.UTC)),
        make_event("infra-observer.ahead", resource, occurred=now + dt.timedelta(minutes=5)),
    ]
    assert (await prefect.post_events(events)).status_code == 204
    stored = await prefect.wait_for_events(expected_count=2, resource_ids=[resource], settle=0)
    assert {e["event"] for e in stored} == {"infra-observer.old", "infra-observer.ahead"}
    recent = await prefect.read_events(resource_ids=[resource], since=now - dt.timedelta(hours=1))
    assert [e["event"] for e in recent] == ["infra-observer.ahead"]


async def test_prefect_read_events_follows_pages(prefect: PrefectPeer) -> None:
    resource = f"infra-observer.smoke.{uuid.uuid4()}"
    events = [make_event("infra-observer.page", resource) for _ in range(60)]
    assert (await prefect.post_events(events)).status_code == 204
    stored = await prefect.wait_for_events(expected_count=60, resource_ids=[resource], timeout=30)
    assert sorted(e["id"] for e in stored) == sorted(e["id"] for e in events)


async def test_prefect_same_id_twice_stored_once_with_basic_auth() -> None:
    # A private server: a batch of only already-stored ids upsets the SQLite persister
    # for a few seconds, which must not cost other tests their events.
    peer = await asyncio.to_thread(lambda: PrefectPeer(auth_string=TEST_AUTH_STRING).start())
    try:
        async with httpx.AsyncClient(base_url=peer.api_url) as anonymous:
            assert (await anonymous.post("/events", json=[])).status_code == 401
        first = make_event("infra-observer.dup", "infra-observer.dup.1", payload={"n": 1})
        assert (await peer.post_events([first])).status_code == 204
        await peer.wait_for_events(expected_count=1, ids=[first["id"]], settle=0)
        second = {**first, "payload": {"n": 2}}
        assert (await peer.post_events([second])).status_code == 204
        stored = await peer.wait_for_events(expected_count=1, ids=[first["id"]], settle=2.5)
        assert len(stored) == 1
        assert stored[0]["payload"] == {"n": 1}
    finally:
        await asyncio.to_thread(peer.stop)
