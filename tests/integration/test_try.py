"""The README's try-it command, end to end and non-interactively."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXPECTED = [
    "prefect.kubernetes.pod.pending",
    "prefect.kubernetes.pod.running",
    "prefect.kubernetes.pod.succeeded",
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
        assert "stopped everything this command started" in output
