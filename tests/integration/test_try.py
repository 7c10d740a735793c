"""The README's try-it command, end to end and non-interactively."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from tests.peers import KubePeer
from tests.peers.kube import create_pod

REPO = Path(__file__).resolve().parents[2]
EXPECTED = [
    "prefect.kubernetes.pod.pending",
    "prefect.kubernetes.pod.running",
    "prefect.kubernetes.pod.succeeded",
    "prefect.kubernetes.pod.failed",
    "prefect.docker.container.created",
    "prefect.docker.container.running",
    "prefect.docker.container.exited",
]


def run_try(*args: str) -> str:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("INFRA_OBSERVER_", "PREFECT_", "KUBECONFIG", "DOCKER_HOST"))
    }
    result = subprocess.run(
        [str(REPO / "scripts" / "try"), "--once", *args],
        check=False,
        env=env,
        capture_output=True,
        timeout=900,
    )
    output = result.stdout.decode()
    assert result.returncode == 0, output + result.stderr.decode()
    return output


def test_try_shows_events_and_stops_everything_twice_in_a_row() -> None:
    for args in ((), ("--prefect",)):
        output = run_try(*args)
        event_lines = [line for line in output.splitlines() if "prefect." in line]
        for name in EXPECTED:
            assert any(name in line for line in event_lines), output
        running = next(line for line in event_lines if "pod.running" in line)
        assert " follows " in running
        crashed = next(line for line in output.splitlines() if " is now Crashed: " in line)
        assert "Kubernetes pod try-infra-observer/flow-run-" in crashed, crashed
        assert "stopped everything this command started" in output


def test_try_watches_a_given_cluster_and_ctrl_c_stops_everything(kube: KubePeer) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("INFRA_OBSERVER_", "PREFECT_", "DOCKER_HOST"))
    }
    env["KUBECONFIG"] = str(kube.kubeconfig)
    dockerds_before = count_processes("dockerd")
    process = subprocess.Popen(
        [str(REPO / "scripts" / "try")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        read_until(process, lines, "watching; Ctrl-C")
        assert any("watching the cluster of KUBECONFIG" in line for line in lines)
        assert not any("starting kube-apiserver" in line for line in lines)
        namespace = f"try-{uuid.uuid4().hex[:8]}"
        asyncio.run(
            create_pod(
                kube, namespace, "given-cluster-pod", {"prefect.io/flow-run-id": str(uuid.uuid4())}
            )
        )
        read_until(process, lines, "given-cluster-pod")
        process.send_signal(signal.SIGINT)
        read_until(process, lines, "stopped everything this command started")
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    assert count_processes("dockerd") == dockerds_before


def read_until(process: subprocess.Popen[bytes], lines: list[str], marker: str) -> None:
    assert process.stdout is not None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        raw = process.stdout.readline()
        if not raw:
            raise AssertionError(f"ended before {marker!r}:\n" + "".join(lines))
        lines.append(raw.decode(errors="replace"))
        if marker in lines[-1]:
            return
    raise AssertionError(f"no {marker!r}:\n" + "".join(lines))


def count_processes(name: str) -> int:
    result = subprocess.run(["pgrep", "-c", "-x", name], capture_output=True, check=False)
    return int(result.stdout.strip() or 0)
