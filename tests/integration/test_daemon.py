"""The daemon as users run it: `infra-observer run|check` as a process, on the real peers."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import orjson
import pytest

from infra_observer.app import LIFECYCLE_START_WAIT_SECONDS
from tests.peers._util import free_port
from tests.peers.kube import KubePeer, create_pod, delete_pod, set_pod_phase
from tests.peers.prefect import PrefectPeer

BIN = Path(sys.executable).parent / "infra-observer"


def base_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("INFRA_OBSERVER_", "PREFECT_", "KUBECONFIG", "DOCKER_"))
    }
    env.update({"INFRA_OBSERVER_LOG_FORMAT": "json", **extra})
    return env


class Daemon:
    """`infra-observer run` in a process of its own, its logs kept for the assertions."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [str(BIN), "run"],
            env={**env, "INFRA_OBSERVER_HEALTH_PORT": str(self.port)},
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=5)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.logs_text()
            try:
                if self.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready after {timeout}s:\n{self.logs_text()}")

    def logs(self) -> list[dict[str, object]]:
        lines = self.log_path.read_bytes().splitlines()
        return [orjson.loads(line) for line in lines if line.startswith(b"{")]

    def logs_text(self) -> str:
        return self.log_path.read_text()[-4000:]

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        """Teardown: whatever the test left running goes, and the log file is closed."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def kube_env(kube: KubePeer, namespace: str, **extra: str) -> dict[str, str]:
    return base_env(
        INFRA_OBSERVER_KUBERNETES_ENABLED="true",
        INFRA_OBSERVER_KUBERNETES_KUBECONFIG=str(kube.kubeconfig),
        INFRA_OBSERVER_KUBERNETES_NAMESPACES=namespace,
        INFRA_OBSERVER_EMITTER_FLUSH_INTERVAL_SECONDS="0.05",
        INFRA_OBSERVER_EMITTER_RETRY_MAX_SECONDS="1",
        **extra,
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_no_source_enabled_says_how_to_enable_one() -> None:
    result = subprocess.run(
        [str(BIN), "run"], check=False, env=base_env(), capture_output=True, timeout=60
    )
    assert result.returncode == 2
    message = result.stderr.decode()
    for variable in ("KUBERNETES_ENABLED", "DOCKER_ENABLED", "ECS_ENABLED"):
        assert f"INFRA_OBSERVER_{variable}=true" in message


def test_bad_configuration_is_one_line_per_variable_without_secrets() -> None:
    env = base_env(
        INFRA_OBSERVER_EMITTER_QUEUE_SIZE="-1",
        PREFECT_API_URL="http://127.0.0.1:1/api",
        PREFECT_API_KEY="pnu_do_not_print",
        PREFECT_API_AUTH_STRING="user:do_not_print",
    )
    result = subprocess.run(
        [str(BIN), "run"], check=False, env=env, capture_output=True, timeout=60
    )
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert "INFRA_OBSERVER_EMITTER_QUEUE_SIZE='-1'" in stderr
    assert "do_not_print" not in stderr + result.stdout.decode()


def related_to(event: Mapping[str, object], flow_run_id: str) -> bool:
    related = event["related"]
    assert isinstance(related, list)
    return any(r["prefect.resource.id"] == f"prefect.flow-run.{flow_run_id}" for r in related)


def test_check_reports_each_peer(kube: KubePeer, prefect: PrefectPeer) -> None:
    env = kube_env(kube, "default", **prefect.env())
    result = subprocess.run(
        [str(BIN), "check"], check=False, env=env, capture_output=True, timeout=120
    )
    lines = result.stdout.decode().splitlines()
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert lines[0].startswith("PASS sink events-api")
    assert lines[1].startswith("PASS lifecycle orchestration")
    assert lines[2].startswith("PASS source kubernetes")

    env["PREFECT_API_URL"] = f"http://127.0.0.1:{free_port()}/api"
    env["PREFECT_API_KEY"] = "pnu_do_not_print"
    result = subprocess.run(
        [str(BIN), "check"], check=False, env=env, capture_output=True, timeout=120
    )
    assert result.returncode == 1
    output = result.stdout.decode()
    assert output.startswith("FAIL sink events-api:")
    assert "PREFECT_API_URL" in output
    assert "do_not_print" not in output + result.stderr.decode()


async def test_pod_lifecycle_end_to_end(
    kube: KubePeer, prefect: PrefectPeer, daemons: list[Daemon], tmp_path: Path
) -> None:
    namespace = unique("e2e")
    flow_run_id = str(uuid.uuid4())
    await create_pod(kube, namespace, "flow-pod", {"prefect.io/flow-run-id": flow_run_id})
    daemon = Daemon(kube_env(kube, namespace, **prefect.env()), tmp_path / "daemon.log")
    daemons.append(daemon)
    await asyncio.to_thread(daemon.wait_ready)
    assert daemon.get("/healthz").status_code == 200

    await set_pod_phase(kube, namespace, "flow-pod", "Running")
    await set_pod_phase(kube, namespace, "flow-pod", "Succeeded")
    stored = await prefect.wait_for_events(
        expected_count=3,
        names=[f"prefect.kubernetes.pod.{phase}" for phase in ("pending", "running", "succeeded")],
        timeout=60,
    )
    mine = [event for event in stored if related_to(event, flow_run_id)]
    by_name = {event["event"]: event for event in mine}
    assert sorted(by_name) == [
        "prefect.kubernetes.pod.pending",
        "prefect.kubernetes.pod.running",
        "prefect.kubernetes.pod.succeeded",
    ]
    assert len(mine) == 3
    assert (
        by_name["prefect.kubernetes.pod.running"]["follows"]
        == by_name["prefect.kubernetes.pod.pending"]["id"]
    )
    assert (
        by_name["prefect.kubernetes.pod.succeeded"]["follows"]
        == by_name["prefect.kubernetes.pod.running"]["id"]
    )

    metrics = daemon.get("/metrics").text
    assert (
        "infra_observer_events_emitted_total"
        '{event="prefect.kubernetes.pod.succeeded",source="kubernetes"} 1.0' in metrics
    )
    assert (
        "infra_observer_events_observed_total"
        '{event="prefect.kubernetes.pod.succeeded",source="kubernetes"} 1.0' in metrics
    )
    assert "infra_observer_source_ready" in metrics

    await delete_pod(kube, namespace, "flow-pod")
    assert await asyncio.to_thread(daemon.stop) == 0
    names = [entry["event"] for entry in daemon.logs()]
    assert names.index("stopping") < names.index("emitter_drained") < names.index("stopped")


async def test_sigkill_with_spool_loses_nothing_and_stores_no_duplicates(
    kube: KubePeer, prefect: PrefectPeer, daemons: list[Daemon], tmp_path: Path
) -> None:
    namespace = unique("spool")
    flow_run_id = str(uuid.uuid4())
    spool = tmp_path / "spool"
    down = f"http://127.0.0.1:{free_port()}/api"
    env = kube_env(
        kube, namespace, PREFECT_API_URL=down, INFRA_OBSERVER_EMITTER_SPOOL_DIR=str(spool)
    )
    await create_pod(kube, namespace, "killed", {"prefect.io/flow-run-id": flow_run_id})
    first = Daemon(env, tmp_path / "first.log")
    daemons.append(first)
    deadline = time.monotonic() + 60
    # Not ready (the sink is down), but the source syncs and spools the Pending event.
    while not list(spool.glob("segment-*.jsonl")) or not any(
        path.stat().st_size for path in spool.glob("segment-*.jsonl")
    ):
        assert time.monotonic() < deadline, first.logs_text()
        await asyncio.sleep(0.2)
    await set_pod_phase(kube, namespace, "killed", "Running")
    while sum(path.read_bytes().count(b"\n") for path in spool.glob("segment-*.jsonl")) < 2:
        assert time.monotonic() < deadline, first.logs_text()
        await asyncio.sleep(0.2)
    first.stop(signal.SIGKILL)

    second = Daemon({**env, **prefect.env()}, tmp_path / "second.log")
    daemons.append(second)
    await asyncio.to_thread(second.wait_ready)
    stored = await prefect.wait_for_events(
        expected_count=2,
        resource_ids=None,
        names=["prefect.kubernetes.pod.pending", "prefect.kubernetes.pod.running"],
        timeout=60,
        settle=3,
    )
    mine = [event for event in stored if related_to(event, flow_run_id)]
    assert sorted(event["event"] for event in mine) == [
        "prefect.kubernetes.pod.pending",
        "prefect.kubernetes.pod.running",
    ]
    assert await asyncio.to_thread(second.stop) == 0
    logs = second.logs()
    opened = next(entry for entry in logs if entry["event"] == "spool_opened")
    assert opened["pending"] == 2


async def test_two_replicas_with_leader_election_fail_over(
    kube: KubePeer, prefect: PrefectPeer, daemons: list[Daemon], tmp_path: Path
) -> None:
    namespace = unique("ha")
    flow_run_id = str(uuid.uuid4())
    pod = await create_pod(kube, namespace, "ha-pod", {"prefect.io/flow-run-id": flow_run_id})
    resource = f"prefect.kubernetes.pod.{pod.metadata.uid}"
    env = kube_env(
        kube,
        namespace,
        **prefect.env(),
        INFRA_OBSERVER_LEADER_ELECTION_ENABLED="true",
        INFRA_OBSERVER_LEADER_ELECTION_NAMESPACE="default",
        INFRA_OBSERVER_LEADER_ELECTION_LEASE_NAME=unique("lease"),
        INFRA_OBSERVER_LEADER_ELECTION_LEASE_DURATION_SECONDS="4",
        INFRA_OBSERVER_LEADER_ELECTION_RENEW_DEADLINE_SECONDS="3",
        INFRA_OBSERVER_LEADER_ELECTION_RETRY_PERIOD_SECONDS="0.5",
    )
    first = Daemon({**env, "INFRA_OBSERVER_LEADER_ELECTION_IDENTITY": "first"}, tmp_path / "1.log")
    daemons.append(first)
    await asyncio.to_thread(first.wait_ready)
    second = Daemon(
        {**env, "INFRA_OBSERVER_LEADER_ELECTION_IDENTITY": "second"}, tmp_path / "2.log"
    )
    daemons.append(second)
    await asyncio.to_thread(second.wait_ready)  # a standby is ready, so rollouts proceed
    leaders = [
        daemon
        for daemon in (first, second)
        if any(entry["event"] == "leader_acquired" for entry in daemon.logs())
    ]
    assert leaders == [first]
    await prefect.wait_for_events(expected_count=1, resource_ids=[resource], timeout=60)

    first.stop(signal.SIGKILL)
    await set_pod_phase(kube, namespace, "ha-pod", "Running")
    stored = await prefect.wait_for_events(
        expected_count=2, resource_ids=[resource], timeout=60, settle=3
    )
    assert sorted(event["event"] for event in stored) == [
        "prefect.kubernetes.pod.pending",
        "prefect.kubernetes.pod.running",
    ]
    assert all(related_to(event, flow_run_id) for event in stored)
    assert any(entry["event"] == "leader_acquired" for entry in second.logs())
    assert await asyncio.to_thread(second.stop) == 0
    assert any(entry["event"] == "leader_released" for entry in second.logs())


def test_a_missing_kubeconfig_is_a_configuration_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing-kubeconfig"
    env = base_env(
        INFRA_OBSERVER_KUBERNETES_ENABLED="true",
        INFRA_OBSERVER_KUBERNETES_KUBECONFIG=str(missing),
        INFRA_OBSERVER_HEALTH_PORT="0",
    )
    result = subprocess.run(
        [str(BIN), "run"], check=False, env=env, capture_output=True, timeout=60
    )
    assert result.returncode == 2, result.stderr.decode()
    stderr = result.stderr.decode()
    assert f"INFRA_OBSERVER_KUBERNETES_KUBECONFIG='{missing}' is not a file" in stderr
    assert "current-context" not in stderr  # the loader's word for an empty kubeconfig
    assert "emitter_drained" in stderr  # stopped in order, not torn down


PENDING_PODS_AT_START = 150


async def test_at_start_the_pods_events_go_out_before_any_proposal(
    kube: KubePeer, prefect: PrefectPeer, daemons: list[Daemon], tmp_path: Path
) -> None:
    """A restart among many pending pods: every pod's event is received by the server before
    the first `InfrastructurePending` is accepted, and then every run gets it."""
    namespace = unique("start")
    runs = await prefect.create_flow_runs(PENDING_PODS_AT_START, flow_name="infra-observer-start")
    for index, run in enumerate(runs):
        await create_pod(kube, namespace, f"flow-{index}", {"prefect.io/flow-run-id": run})
    daemon = Daemon(kube_env(kube, namespace, **prefect.env()), tmp_path / "daemon.log")
    daemons.append(daemon)
    stored = await prefect.wait_for_events(
        expected_count=PENDING_PODS_AT_START,
        names=["prefect.kubernetes.pod.pending"],
        timeout=60,
        settle=0,
    )
    mine = [event for event in stored if any(related_to(event, run) for run in runs)]
    assert len(mine) == PENDING_PODS_AT_START
    last_received = max(moment(str(event["received"])) for event in mine)
    accepted_at = [await pending_since(prefect, run) for run in runs]
    assert min(accepted_at) > last_received
    started = [entry for entry in daemon.logs() if entry["event"] == "lifecycle_started"]
    assert len(started) == 1, daemon.logs_text()
    # It waited for the events, not for its time limit.
    assert started[0]["waited_seconds"] < LIFECYCLE_START_WAIT_SECONDS, started


def moment(timestamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(timestamp)


async def pending_since(prefect: PrefectPeer, run: str) -> dt.datetime:
    """When the server accepted the run's `InfrastructurePending` (its state's timestamp)."""
    deadline = time.monotonic() + 120
    while True:
        state = (await prefect.read_flow_run(run))["state"]
        if state["name"] == "InfrastructurePending":
            return moment(str(state["timestamp"]))
        assert time.monotonic() < deadline, f"{run} still {state['name']}"
        await asyncio.sleep(0.5)
