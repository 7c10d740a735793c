"""The node peer: a kubelet on containerd really runs pods, and the daemon runs as one.

Every pod status here is the kubelet's own, never a patch written by the test.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import time
import uuid
from collections.abc import Collection
from os import listdir
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra_observer.events.ids import pod_event_id
from tests.peers import DockerPeer, PrefectPeer
from tests.peers.image import built_image
from tests.peers.kube import ensure_namespace
from tests.peers.node import BUSYBOX_IMAGE, NODE_NAME, NodePeer

ROOT = Path(__file__).resolve().parents[2]

NAMESPACE = "node-test"


async def wait_pod(
    node: NodePeer, name: str, done: Any, *, within: float = 90, namespace: str = NAMESPACE
) -> Any:
    """Poll a pod until ``done(pod)`` is true; returns the V1Pod."""
    from kubernetes_asyncio import client

    deadline = time.monotonic() + within
    async with node.api_client() as api:
        core: Any = client.CoreV1Api(api)
        while True:
            pod = await core.read_namespaced_pod(name, namespace)
            if done(pod):
                return pod
            if time.monotonic() > deadline:
                raise AssertionError(f"pod {name}: condition not met; status {pod.status}")
            await asyncio.sleep(0.5)


def sleeping_pod(prefix: str) -> tuple[str, dict[str, Any]]:
    """A new name starting with `prefix`, and a busybox pod of that name that sleeps."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    body = {
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "main", "image": BUSYBOX_IMAGE, "command": ["sleep", "600"]}],
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": False,
        },
    }
    return name, body


async def test_a_busybox_pod_runs_on_the_node_with_a_cni_address(node: NodePeer) -> None:
    from kubernetes_asyncio import client

    await ensure_namespace(node, NAMESPACE)
    name, body = sleeping_pod("smoke")
    async with node.api_client() as api:
        core: Any = client.CoreV1Api(api)
        await core.create_namespaced_pod(NAMESPACE, body)
        pod = await wait_pod(node, name, lambda p: p.status.phase == "Running")
        await core.delete_namespaced_pod(name, NAMESPACE)
    assert pod.spec.node_name == NODE_NAME
    assert pod.status.container_statuses[0].state.running is not None
    assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(node.pod_subnet)


def bridge_addresses(node: NodePeer) -> tuple[str, set[str]]:
    """The bridge's MAC address, and those of its ports (the host ends of the pods' veths)."""
    bridge = Path("/sys/class/net") / node.bridge
    ports = {
        (bridge.parent / port / "address").read_text().strip() for port in listdir(bridge / "brif")
    }
    return (bridge / "address").read_text().strip(), ports


async def test_the_bridge_keeps_its_address_while_pods_come_and_go(node: NodePeer) -> None:
    """Pods hold the gateway's MAC in their ARP cache: were it a port's, it would change when
    that pod goes, and the other pods would lose the host until their entry expired."""
    from kubernetes_asyncio import client

    await ensure_namespace(node, NAMESPACE)
    before, ports_before = bridge_addresses(node)
    name, body = sleeping_pod("churn")
    async with node.api_client() as api:
        core: Any = client.CoreV1Api(api)
        await core.create_namespaced_pod(NAMESPACE, body)
        await wait_pod(node, name, lambda p: p.status.phase == "Running")
        during, ports = bridge_addresses(node)
        await core.delete_namespaced_pod(name, NAMESPACE, grace_period_seconds=0)
    pod_ports = ports - ports_before
    assert pod_ports
    assert during == before
    assert during not in ports
    deadline = time.monotonic() + 60
    while (after := bridge_addresses(node))[1] & pod_ports:  # the pod's veth goes last
        assert time.monotonic() < deadline, f"the pod's port {pod_ports} still there"
        await asyncio.sleep(0.5)
    assert after[0] == before


# ---------------------------------------------------------------- the daemon as a pod

RELEASE = "infra-observer"
RELEASE_NAMESPACE = "infra-observer"
FLOWS = "node-flows"


def harness_values(node: NodePeer, prefect: PrefectPeer, *, image_tag: str) -> dict[str, Any]:
    """deploy/kind/values.yaml with what this harness differs in: the image tag, and the
    Prefect server on the host, reached at the bridge's gateway."""
    values: dict[str, Any] = yaml.safe_load((ROOT / "deploy/kind/values.yaml").read_text())
    values["image"].update(tag=image_tag)
    values["prefect"]["apiUrl"] = f"http://{node.forward(prefect.port, prefect.port)}/api"
    values["kubernetes"]["namespaces"] = [FLOWS]
    return values


def helm_release(node: NodePeer, values: dict[str, Any], *, command: str = "install") -> None:
    """``helm install`` (or ``upgrade``) of the chart with ``values``, waiting for nothing."""
    values_file = node.state_dir / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    extra = ("--create-namespace",) if command == "install" else ()
    node.helm(
        command,
        RELEASE,
        str(ROOT / "helm" / "infra-observer"),
        "--namespace",
        RELEASE_NAMESPACE,
        *extra,
        "--values",
        str(values_file),
    )


def load_project_image(node: NodePeer, dockerd: DockerPeer) -> str:
    """The Dockerfile's image, built in the test dockerd, saved and imported into the node's
    containerd as `kind load docker-image` would; returns its tag."""
    image = built_image(dockerd)
    archive = node.state_dir / "infra-observer-image.tar"
    image.cli("save", "-o", str(archive), image.tag, timeout=300)
    node.import_image(archive)
    return image.tag.split(":", 1)[1]


@pytest.fixture(scope="module")
def daemon_pod(node: NodePeer, dockerd: DockerPeer, prefect: PrefectPeer) -> Any:
    """The chart installed on the node; returns the Ready daemon pod (V1Pod)."""
    tag = load_project_image(node, dockerd)
    asyncio.run(ensure_namespace(node, FLOWS))
    helm_release(node, harness_values(node, prefect, image_tag=tag))
    return asyncio.run(wait_daemon_ready(node))


async def wait_daemon_ready(node: NodePeer, *, exclude: Collection[str] = ()) -> Any:
    from kubernetes_asyncio import client

    selector = f"app.kubernetes.io/instance={RELEASE}"
    deadline = time.monotonic() + 180
    async with node.api_client() as api:
        core: Any = client.CoreV1Api(api)
        while time.monotonic() < deadline:
            pods = await core.list_namespaced_pod(RELEASE_NAMESPACE, label_selector=selector)
            for pod in pods.items:
                conditions = pod.status.conditions or []
                if pod.metadata.name not in exclude and any(
                    c.type == "Ready" and c.status == "True" for c in conditions
                ):
                    return pod
            await asyncio.sleep(1)
    raise AssertionError(f"no Ready daemon pod: {[p.status for p in pods.items]}")


def container_process(node: NodePeer, container_id: str) -> Path:
    """/proc/<pid> of a container's main process, from containerd's task list."""
    tasks = node.ctr("tasks", "list").stdout.splitlines()
    cid = container_id.removeprefix("containerd://")
    pid = next(line.split()[1] for line in tasks if line.startswith(cid))
    return Path("/proc") / pid


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


async def test_the_daemon_runs_as_a_pod_from_the_chart(node: NodePeer, daemon_pod: Any) -> None:
    """Ready through its real probes, as 65532 on a read-only root, with the in-cluster
    configuration only: the token is the one the kubelet mounted for this pod."""
    status = daemon_pod.status.container_statuses[0]
    assert status.ready
    assert status.restart_count == 0
    proc = container_process(node, status.container_id)
    uids = next(x for x in (proc / "status").read_text().splitlines() if x.startswith("Uid:"))
    assert uids.split()[1:] == ["65532"] * 4
    root_mount = next(
        x.split() for x in (proc / "mountinfo").read_text().splitlines() if x.split()[4] == "/"
    )
    assert "ro" in root_mount[5].split(",")
    environ = dict(
        e.split("=", 1) for e in (proc / "environ").read_bytes().decode().split("\0") if "=" in e
    )
    assert "KUBECONFIG" not in environ
    # The `kubernetes` Service's address, which the kubelet puts in every container.
    assert environ["KUBERNETES_SERVICE_HOST"] == node.service_ip
    assert ipaddress.ip_address(daemon_pod.status.pod_ip) in ipaddress.ip_network(node.pod_subnet)
    token = (proc / "root/var/run/secrets/kubernetes.io/serviceaccount/token").read_text()
    claims = jwt_claims(token)
    assert claims["sub"] == f"system:serviceaccount:{RELEASE_NAMESPACE}:{RELEASE}"
    assert claims["kubernetes.io"]["pod"]["uid"] == daemon_pod.metadata.uid


# ---------------------------------------------------------------- real flow-run pods

POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")


def flow_run_job(
    name: str, flow_run: str, container: dict[str, Any], **spec: Any
) -> dict[str, Any]:
    """A Job labelled as Prefect's Kubernetes worker labels a flow run's Job and pod."""
    labels = {
        "prefect.io/flow-run-id": flow_run,
        "prefect.io/flow-run-name": name,
        "prefect.io/flow-name": "node-test",
    }
    pod_spec = {
        "restartPolicy": spec.pop("restart_policy", "Never"),
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "prefect-job", "image": BUSYBOX_IMAGE, **container}],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "backoffLimit": spec.pop("backoff_limit", 0),
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


async def run_job(node: NodePeer, job: dict[str, Any], done: Any) -> Any:
    """Create the Job and wait for its pod to satisfy ``done``; returns the V1Pod."""
    from kubernetes_asyncio import client

    name = job["metadata"]["name"]
    async with node.api_client() as api:
        batch: Any = client.BatchV1Api(api)
        await batch.create_namespaced_job(FLOWS, job)
        core: Any = client.CoreV1Api(api)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pods = await core.list_namespaced_pod(FLOWS, label_selector=f"job-name={name}")
            if pods.items and done(pods.items[0]):
                return pods.items[0]
            await asyncio.sleep(0.5)
    raise AssertionError(f"job {name}: its pod never got there: {pods.items}")


async def stored_for(prefect: PrefectPeer, uid: str, final_id: uuid.UUID) -> list[dict[str, Any]]:
    """The pod's stored events, once the one with ``final_id`` is there (then a settle)."""
    resource = f"prefect.kubernetes.pod.{uid}"
    deadline = time.monotonic() + 60
    while str(final_id) not in {
        e["id"] for e in await prefect.read_events(resource_ids=[resource])
    }:
        if time.monotonic() > deadline:
            stored = await prefect.read_events(resource_ids=[resource])
            raise AssertionError(f"{final_id} not stored for {uid}: {stored}")
        await asyncio.sleep(0.5)
    await asyncio.sleep(2)
    return await prefect.read_events(resource_ids=[resource])


def assert_events_of(pod: Any, stored: list[dict[str, Any]], flow_run: str) -> None:
    """Each stored id is the id of its phase for this pod's uid, once each; the chain of
    `follows` runs through all of them from the Pending event."""
    uid = pod.metadata.uid
    restarts = max((s.restart_count for s in pod.status.container_statuses or []), default=0)
    possible = {
        str(pod_event_id(uid=uid, phase=phase, restart_count=rc)): phase
        for phase in POD_PHASES
        for rc in range(restarts + 1)
    }
    ids = [e["id"] for e in stored]
    assert len(ids) == len(set(ids))
    for event in stored:
        assert event["id"] in possible, event
        assert event["event"] == f"prefect.kubernetes.pod.{possible[event['id']].lower()}"
        related = [r["prefect.resource.id"] for r in event["related"]]
        assert f"prefect.flow-run.{flow_run}" in related
    pending = str(pod_event_id(uid=uid, phase="Pending", restart_count=0))
    by_follows = {e["follows"]: e["id"] for e in stored}
    chain = [pending]
    while chain[-1] in by_follows:
        chain.append(by_follows[chain[-1]])
    assert by_follows.get(None) == pending
    assert sorted(chain) == sorted(ids)


def terminal(pod: Any) -> bool:
    return pod.status.phase in ("Succeeded", "Failed")


def terminated_state(pod: Any) -> Any:
    return pod.status.container_statuses[0].state.terminated


# A Job's container, and the phase, exit code and reason its pod ends with.
ENDINGS: dict[str, tuple[dict[str, Any], tuple[str, int, str]]] = {
    "exit-0": ({"command": ["sh", "-c", "sleep 2; exit 0"]}, ("Succeeded", 0, "Completed")),
    "exit-3": ({"command": ["sh", "-c", "sleep 2; exit 3"]}, ("Failed", 3, "Error")),
    # The sleep lets the runtime arm its OOM notification before the limit is hit.
    "oom": (
        {
            "command": ["sh", "-c", "sleep 1; exec tail /dev/zero"],
            "resources": {"limits": {"memory": "16Mi"}},
        },
        ("Failed", 137, "OOMKilled"),
    ),
}


@pytest.mark.parametrize("case", list(ENDINGS))
async def test_a_flow_run_job_that_ends(
    node: NodePeer, prefect: PrefectPeer, daemon_pod: Any, case: str
) -> None:
    container, (phase, exit_code, reason) = ENDINGS[case]
    flow_run = str(uuid.uuid4())
    job = flow_run_job(f"{case}-{flow_run[:8]}", flow_run, container)
    pod = await run_job(node, job, terminal)
    assert pod.status.phase == phase
    assert (terminated_state(pod).exit_code, terminated_state(pod).reason) == (exit_code, reason)
    final = pod_event_id(uid=pod.metadata.uid, phase=phase, restart_count=0)
    stored = await stored_for(prefect, pod.metadata.uid, final)
    assert_events_of(pod, stored, flow_run)
    running = str(pod_event_id(uid=pod.metadata.uid, phase="Running", restart_count=0))
    assert running in {e["id"] for e in stored}


def waiting_reason(pod: Any) -> str | None:
    statuses = pod.status.container_statuses or []
    waiting = statuses[0].state.waiting if statuses else None
    return waiting.reason if waiting else None


async def delete_job(node: NodePeer, name: str) -> None:
    from kubernetes_asyncio import client

    async with node.api_client() as api:
        await client.BatchV1Api(api).delete_namespaced_job(
            name, FLOWS, propagation_policy="Background"
        )


async def test_a_flow_run_pod_whose_image_cannot_be_pulled(
    node: NodePeer, prefect: PrefectPeer, daemon_pod: Any
) -> None:
    flow_run = str(uuid.uuid4())
    name = f"pull-{flow_run[:8]}"
    # Any remote name: no registry is reachable, so the pull fails on name resolution.
    job = flow_run_job(name, flow_run, {"image": "registry.invalid/flows/missing:1"})
    pod = await run_job(node, job, lambda p: waiting_reason(p) == "ImagePullBackOff")
    pending = pod_event_id(uid=pod.metadata.uid, phase="Pending", restart_count=0)
    stored = await stored_for(prefect, pod.metadata.uid, pending)
    await delete_job(node, name)
    assert pod.status.phase == "Pending"
    assert "ErrImagePull" in pod.status.container_statuses[0].state.waiting.message
    assert [e["id"] for e in stored] == [str(pending)]
    assert_events_of(pod, stored, flow_run)


async def test_a_flow_run_pod_in_a_crash_loop(
    node: NodePeer, prefect: PrefectPeer, daemon_pod: Any
) -> None:
    """restartPolicy OnFailure: the kubelet restarts the container in place (back-off 10 s,
    then 20 s): the phase stays Running and each restart is an event of its own."""
    flow_run = str(uuid.uuid4())
    name = f"crash-{flow_run[:8]}"
    job = flow_run_job(
        name,
        flow_run,
        {"command": ["sh", "-c", "sleep 1; exit 3"]},
        restart_policy="OnFailure",
        backoff_limit=6,
    )
    pod = await run_job(
        node,
        job,
        lambda p: (
            (p.status.container_statuses or [None])[0] is not None
            and p.status.container_statuses[0].restart_count >= 2
        ),
    )
    last = pod.status.container_statuses[0]
    assert pod.status.phase == "Running"
    assert (last.last_state.terminated.exit_code, last.last_state.terminated.reason) == (3, "Error")
    final = pod_event_id(uid=pod.metadata.uid, phase="Running", restart_count=2)
    stored = await stored_for(prefect, pod.metadata.uid, final)
    await delete_job(node, name)
    assert_events_of(pod, stored, flow_run)
    for restarts in (0, 1, 2):
        running = pod_event_id(uid=pod.metadata.uid, phase="Running", restart_count=restarts)
        assert str(running) in {e["id"] for e in stored}


async def last_seen_before_deletion(node: NodePeer, pod: Any) -> Any:
    """Delete a pod and return the last object the apiserver returned before it was gone."""
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException

    name = pod.metadata.name
    async with node.api_client() as api:
        core: Any = client.CoreV1Api(api)
        await core.delete_namespaced_pod(name, FLOWS)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                pod = await core.read_namespaced_pod(name, FLOWS)
            except ApiException as exc:
                if exc.status == 404:
                    return pod
                raise
            await asyncio.sleep(0.2)
    raise AssertionError(f"pod {name} still there: {pod.status}")


async def test_a_flow_run_pod_deleted_mid_run(
    node: NodePeer, prefect: PrefectPeer, daemon_pod: Any
) -> None:
    flow_run = str(uuid.uuid4())
    name = f"deleted-{flow_run[:8]}"
    job = flow_run_job(name, flow_run, {"command": ["sleep", "600"]})
    running = await run_job(node, job, lambda p: p.status.phase == "Running")
    pod = await last_seen_before_deletion(node, running)
    await delete_job(node, name)
    assert pod.metadata.deletion_timestamp is not None
    final = pod_event_id(uid=pod.metadata.uid, phase=pod.status.phase, restart_count=0)
    stored = await stored_for(prefect, pod.metadata.uid, final)
    assert_events_of(pod, stored, flow_run)
    assert pod.status.phase == "Failed"


# ---------------------------------------------------------------- the lifecycle on the node

LIFECYCLE_FLOW = "node-lifecycle"


async def crashed_run(prefect: PrefectPeer, flow_run: str, *, logs: int) -> dict[str, Any]:
    """Wait for the run to be Crashed with at least `logs` log records; its state."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = (await prefect.read_flow_run(flow_run))["state"]
        if state["type"] == "CRASHED" and len(await prefect.read_logs(flow_run)) >= logs:
            return dict(state)
        await asyncio.sleep(0.5)
    records = await prefect.read_logs(flow_run)
    raise AssertionError(f"run {flow_run}: {state}, logs {[r['message'] for r in records]}")


async def test_a_failed_job_crashes_its_run_with_the_pods_last_lines(
    node: NodePeer, prefect: PrefectPeer, daemon_pod: Any
) -> None:
    flow_run = await prefect.create_flow_run(flow_name=LIFECYCLE_FLOW)
    await prefect.force_state(flow_run, state_type="RUNNING", state_name="Running")
    name = f"lc-exit-{flow_run[:8]}"
    script = "for i in 1 2 3 4 5; do echo flow line $i; done; sleep 1; exit 3"
    job = flow_run_job(name, flow_run, {"command": ["sh", "-c", script]})
    await run_job(node, job, terminal)
    state = await crashed_run(prefect, flow_run, logs=5)
    await delete_job(node, name)
    assert state["name"] == "Crashed"
    assert state["message"].startswith(f"Job {FLOWS}/{name} failed (")
    lines = [record["message"] for record in await prefect.read_logs(flow_run)]
    assert lines == [f"flow line {i}" for i in range(1, 6)]


async def test_an_oom_killed_job_crashes_its_run_with_the_diagnosis(
    node: NodePeer, prefect: PrefectPeer, daemon_pod: Any
) -> None:
    flow_run = await prefect.create_flow_run(flow_name=LIFECYCLE_FLOW)
    await prefect.force_state(flow_run, state_type="RUNNING", state_name="Running")
    name = f"lc-oom-{flow_run[:8]}"
    job = flow_run_job(name, flow_run, ENDINGS["oom"][0])
    await run_job(node, job, terminal)
    state = await crashed_run(prefect, flow_run, logs=1)
    await delete_job(node, name)
    assert "Last pod diagnosis (OOMKilled)" in state["message"], state["message"]
    lines = [record["message"] for record in await prefect.read_logs(flow_run)]
    assert any("killed for exceeding its memory limit" in line for line in lines), lines


# ---------------------------------------------------------------- upgrade, leader election

LEASE_DURATION_SECONDS = 15  # the daemon's default; the chart does not change it
RETRY_PERIOD_SECONDS = 2
# A short flow run: each of its pods goes Pending, Running, Succeeded.
SHORT_RUN = {"command": ["sh", "-c", "sleep 3; exit 0"]}


async def keep_starting_jobs(
    node: NodePeer, flow_runs: dict[str, str], *, started: asyncio.Event, until: asyncio.Event
) -> None:
    """A short Job about every second until ``until`` is set, then one more: pods keep
    changing all through the rolling update. ``started`` is set once three have started."""
    from kubernetes_asyncio import client

    async with node.api_client() as api:
        batch: Any = client.BatchV1Api(api)
        while True:
            last = until.is_set()
            name = f"upgrade-{len(flow_runs)}-{uuid.uuid4().hex[:6]}"
            flow_runs[name] = str(uuid.uuid4())
            await batch.create_namespaced_job(FLOWS, flow_run_job(name, flow_runs[name], SHORT_RUN))
            if len(flow_runs) >= 3:
                started.set()
            if last:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), 1)


async def daemon_pods(node: NodePeer) -> list[Any]:
    """The release's pods, in any phase."""
    from kubernetes_asyncio import client

    async with node.api_client() as api:
        pods = await client.CoreV1Api(api).list_namespaced_pod(
            RELEASE_NAMESPACE, label_selector=f"app.kubernetes.io/instance={RELEASE}"
        )
    return list(pods.items)


async def wait_rolled_over(node: NodePeer, old: str) -> Any:
    """The new daemon pod Ready and the old one gone; returns the new one."""
    new_pod = await wait_daemon_ready(node, exclude={old})
    deadline = time.monotonic() + 120
    while old in {p.metadata.name for p in await daemon_pods(node)}:
        if time.monotonic() > deadline:
            raise AssertionError(f"old daemon pod {old} still there")
        await asyncio.sleep(0.5)
    return new_pod


async def job_pods_succeeded(node: NodePeer, names: Collection[str]) -> list[Any]:
    from kubernetes_asyncio import client

    deadline = time.monotonic() + 180
    async with node.api_client() as api:
        core: Any = client.CoreV1Api(api)
        while True:
            pods = [
                (await core.list_namespaced_pod(FLOWS, label_selector=f"job-name={n}")).items
                for n in names
            ]
            if all(p and p[0].status.phase == "Succeeded" for p in pods):
                return [p[0] for p in pods]
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs not all succeeded: {[p and p[0].status for p in pods]}")
            await asyncio.sleep(1)


async def follow_daemon_logs(node: NodePeer, *, until: asyncio.Event) -> None:
    """Copy every daemon pod's log, read through the apiserver as `kubectl logs -f` does,
    to ``<state dir>/daemon-logs/<pod>.log``: an old pod's log is gone with the pod."""
    from kubernetes_asyncio import client

    out = node.state_dir / "daemon-logs"
    out.mkdir(exist_ok=True)
    followers: dict[str, asyncio.Task[None]] = {}

    async def follow(name: str) -> None:
        async with node.api_client() as api:
            response = await client.CoreV1Api(api).read_namespaced_pod_log(
                name, RELEASE_NAMESPACE, follow=True, _preload_content=False
            )
            with (out / f"{name}.log").open("ab") as sink:
                async for line in response.content:
                    sink.write(line)
                    sink.flush()

    while not until.is_set():
        for pod in await daemon_pods(node):
            statuses = pod.status.container_statuses or []
            started = statuses and (statuses[0].state.running or statuses[0].state.terminated)
            if started and pod.metadata.name not in followers:
                followers[pod.metadata.name] = asyncio.create_task(follow(pod.metadata.name))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(until.wait(), 0.5)
    for task in followers.values():
        task.cancel()
    await asyncio.gather(*followers.values(), return_exceptions=True)


async def daemon_restarts(node: NodePeer) -> dict[str, int]:
    """Each daemon pod's restart count: a restarted daemon lists pods afresh, and the states
    its first process had not delivered are not seen again."""
    return {
        pod.metadata.name: sum(s.restart_count for s in pod.status.container_statuses or [])
        for pod in await daemon_pods(node)
    }


def daemon_problems(node: NodePeer) -> list[str]:
    """The daemon pods' warnings and errors, from the logs `follow_daemon_logs` copied."""
    logs = sorted((node.state_dir / "daemon-logs").glob("*.log"))
    lines = [line for log in logs for line in log.read_text(errors="replace").splitlines()]
    return [line for line in lines if '"level":"warning"' in line or '"level":"error"' in line]


async def test_helm_upgrade_while_pods_change_loses_nothing(
    node: NodePeer, prefect: PrefectPeer, daemon_pod: Any
) -> None:
    """A changed value rolls the Deployment while Jobs start and end: every pod's pending,
    running and succeeded events are stored, each id once."""
    old = (await wait_daemon_ready(node)).metadata.name
    values = yaml.safe_load((node.state_dir / "values.yaml").read_text())
    values["emitter"] = {**values.get("emitter", {}), "batchMaxEvents": 100}
    flow_runs: dict[str, str] = {}
    started, rolled, done = asyncio.Event(), asyncio.Event(), asyncio.Event()
    logs = asyncio.create_task(follow_daemon_logs(node, until=done))
    jobs = asyncio.create_task(keep_starting_jobs(node, flow_runs, started=started, until=rolled))
    try:
        await asyncio.wait_for(started.wait(), 60)
        await asyncio.to_thread(helm_release, node, values, command="upgrade")
        await wait_rolled_over(node, old)
    finally:
        rolled.set()
        await jobs
    try:
        for pod in await job_pods_succeeded(node, list(flow_runs)):
            uid = pod.metadata.uid
            expected = {
                str(pod_event_id(uid=uid, phase=phase, restart_count=0))
                for phase in ("Pending", "Running", "Succeeded")
            }
            final = pod_event_id(uid=uid, phase="Succeeded", restart_count=0)
            stored = [e["id"] for e in await stored_for(prefect, uid, final)]
            assert sorted(stored) == sorted(expected), (
                pod.metadata.name,
                await daemon_restarts(node),
                daemon_problems(node),
                prefect.dropped_batches(),
            )
    finally:
        done.set()
        await logs


async def lease_holder(node: NodePeer) -> str:
    lease = await asyncio.to_thread(
        node._get_json,
        f"/apis/coordination.k8s.io/v1/namespaces/{RELEASE_NAMESPACE}/leases/{RELEASE}",
    )
    holder: str = lease.get("spec", {}).get("holderIdentity") or ""
    return holder


async def daemon_pod_names(node: NodePeer) -> set[str]:
    from kubernetes_asyncio import client

    async with node.api_client() as api:
        pods = await client.CoreV1Api(api).list_namespaced_pod(
            RELEASE_NAMESPACE, label_selector=f"app.kubernetes.io/instance={RELEASE}"
        )
    return {p.metadata.name for p in pods.items if p.status.phase == "Running"}


async def wait_for_leader(
    node: NodePeer, *, within: float, among: int | None = None, other_than: str = ""
) -> tuple[str, float]:
    """The pod (identity ``<pod name>-<pid>``) holding the Lease, once ``among`` daemon pods
    run (any number if None), and how long that took."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        holder, names = await lease_holder(node), await daemon_pod_names(node)
        leaders = [n for n in names - {other_than} if holder.startswith(f"{n}-")]
        if leaders and among in (None, len(names)):
            return leaders[0], time.monotonic() - started
        await asyncio.sleep(0.5)
    raise AssertionError(f"no leader among {names}: lease {holder!r}")


async def test_two_replicas_elect_one_leader_and_hand_over(node: NodePeer, daemon_pod: Any) -> None:
    from kubernetes_asyncio import client

    values = yaml.safe_load((node.state_dir / "values.yaml").read_text())
    values.update(replicaCount=2, leaderElection={"enabled": True})
    await asyncio.to_thread(helm_release, node, values, command="upgrade")
    leader, _ = await wait_for_leader(node, within=180, among=2)
    for _ in range(6):  # the holder keeps renewing: nobody else takes it
        await asyncio.sleep(1)
        assert (await lease_holder(node)).startswith(f"{leader}-")
    async with node.api_client() as api:
        await client.CoreV1Api(api).delete_namespaced_pod(
            leader, RELEASE_NAMESPACE, grace_period_seconds=0
        )
    bound = LEASE_DURATION_SECONDS + 2 * RETRY_PERIOD_SECONDS
    _, took = await wait_for_leader(node, within=bound + 60, other_than=leader)
    assert took <= bound, f"handed over after {took:.1f}s"
