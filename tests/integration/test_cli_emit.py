"""`infra-observer emit` and `validate`, run as the installed command, against a real
Prefect server (and the stdout sink)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.peers import PrefectPeer
from tests.peers._util import free_port
from tests.peers.faulty_proxy import FaultyProxy, Mode

COMMAND = Path(sys.executable).parent / "infra-observer"
FLOW_RUN = "0f8d5b1c-2a3e-4f60-9b7d-1c2e3f4a5b6c"
DEPLOYMENT = "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d"
RUN_SECONDS = 120


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def command_env(**extra: str) -> dict[str, str]:
    """The test's environment without any Prefect or infra-observer setting, plus `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "INFRA_OBSERVER_"))
    }
    return {**env, "INFRA_OBSERVER_LOG_FORMAT": "json", **extra}


async def infra_observer(*argv: str, env: dict[str, str], stdin: bytes | None = None) -> Ran:
    assert COMMAND.exists(), f"{COMMAND} is missing: install the project (pip install -e .)"
    process = await asyncio.create_subprocess_exec(
        str(COMMAND),
        *argv,
        env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(stdin), RUN_SECONDS)
    assert process.returncode is not None
    return Ran(process.returncode, stdout.decode(), stderr.decode())


def with_id(event_id: str, argv: list[str], *, occurred: datetime | None = None) -> list[str]:
    fixed = ["--id", event_id]
    if occurred is not None:
        fixed += ["--occurred", occurred.isoformat()]
    return ["emit", *argv, *fixed]


def a_minute_ago() -> datetime:
    # Recent: the server's default read window is the last day.
    return datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)


# The families only `emit` produces (no watcher sees them), and one per watched family.
CASES: dict[str, list[str]] = {
    "block-loaded": [
        "block-loaded",
        "--block-type", "s3-bucket",
        "--block-document-id", "8e1f0c2a-7b3d-4e5f-a6b7-c8d9e0f1a2b3",
        "--block-document-name", "flow-results",
    ],
    "pull-step": [
        "pull-step", "--outcome", "failed", "--flow-run-id", FLOW_RUN,
        "--deployment-id", DEPLOYMENT, "--step-index", "2",
        "--step-json", '{"prefect.deployments.steps.git_clone": {"repository": "r", "id": "c"}}',
    ],
    "transfer-started": [
        "transfer-started", "--transfer-id", "c4f1e2d3-b4a5-4967-8877-665544332211",
        "--description", "local → cloud/ws", "--source-profile", "local",
        "--target-profile", "cloud", "--source-url", "http://127.0.0.1:4200/api",
        "--target-url", "https://api.prefect.cloud/api", "--total-resources", "3",
    ],
    "transfer-completed": [
        "transfer-completed", "--transfer-id", "c4f1e2d3-b4a5-4967-8877-665544332211",
        "--description", "local → cloud/ws", "--source-profile", "local",
        "--target-profile", "cloud", "--source-url", "http://127.0.0.1:4200/api",
        "--target-url", "https://api.prefect.cloud/api", "--total-resources", "3",
        "--succeeded", "2", "--failed", "1", "--skipped", "0",
    ],
    "docker-creation-failed": [
        "docker-creation-failed", "--container-id", "crimson-otter",
        "--flow-run-id", FLOW_RUN, "--worker-name", "docker-worker-1",
    ],
    "kubernetes-pod": [
        "kubernetes-pod", "--phase", "evicted", "--eviction-reason", "Evicted",
        "--pod-uid", "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "--pod-name", "p-1",
        "--namespace", "prefect", "--flow-run-id", FLOW_RUN, "--worker-name", "k8s-1",
    ],
    "ecs-task": [
        "ecs-task", "--status", "stopped",
        "--task-arn", "arn:aws:ecs:us-east-1:123456789012:task/prefect/0123abcd",
        "--flow-run-id", FLOW_RUN, "--deployment-id", DEPLOYMENT,
    ],
    "docker-container": [
        "docker-container", "--status", "exited", "--container-id", "4f6c1e2d9a0b",
        "--container-name", "crimson-otter", "--worker-name", "docker-worker-1",
    ],
}  # fmt: skip


def same_event(stored: dict[str, Any], sent: dict[str, Any]) -> None:
    for key in ("event", "resource", "related", "payload", "id", "follows"):
        assert stored[key] == sent[key], key
    assert datetime.fromisoformat(stored["occurred"]) == datetime.fromisoformat(sent["occurred"])


async def test_every_family_is_emitted_stored_and_validated(
    prefect: PrefectPeer, tmp_path: Path
) -> None:
    ids = {family: str(uuid.uuid4()) for family in CASES}
    occurred = a_minute_ago()
    # The stdout sink shows what was sent; the server must store exactly that.
    sent: dict[str, dict[str, Any]] = {}
    for family, argv in CASES.items():
        command = with_id(ids[family], argv, occurred=occurred)
        ran = await infra_observer(*command, env=command_env())
        assert ran.returncode == 0, ran.stderr
        sent[family] = json.loads(ran.stdout)
        ran = await infra_observer(*command, env=command_env(**prefect.env()))
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == ""
    stored = await prefect.wait_for_events(expected_count=len(ids), ids=ids.values(), settle=0.5)
    by_id = {event["id"]: event for event in stored}
    assert sorted(by_id) == sorted(ids.values())
    for family, event_id in ids.items():
        same_event(by_id[event_id], sent[family])
    # Read back from the API (with the server's `received` field), they still conform.
    read_back = tmp_path / "read-back.jsonl"
    read_back.write_text("".join(json.dumps(event) + "\n" for event in stored))
    ran = await infra_observer("validate", str(read_back), env=command_env())
    assert ran.returncode == 0, ran.stdout
    assert ran.stdout.splitlines()[-1] == f"{len(ids)} events checked: {len(ids)} valid, 0 invalid"


async def test_the_same_id_emitted_twice_is_stored_once(prefect: PrefectPeer) -> None:
    event_id = str(uuid.uuid4())
    argv = with_id(event_id, CASES["pull-step"])
    env = command_env(**prefect.env())
    first = await infra_observer(*argv, env=env)
    assert first.returncode == 0, first.stderr
    stored = await prefect.wait_for_events(expected_count=1, ids=[event_id], settle=0)
    # The same command again, as a retry: the server holds the id, so it is not sent again
    # (its new `occurred` would not be kept anyway).
    retry = await infra_observer(*argv, env=env)
    assert retry.returncode == 0, retry.stderr
    assert "event_already_stored" in retry.stderr
    after = await prefect.wait_for_events(expected_count=1, ids=[event_id], settle=1.5)
    assert after == stored


async def test_validate_passes_emits_output_and_fails_a_corrupted_file(tmp_path: Path) -> None:
    lines = []
    for argv in CASES.values():
        ran = await infra_observer("emit", *argv, env=command_env())
        assert ran.returncode == 0, ran.stderr
        lines.append(ran.stdout)
    good = tmp_path / "events.jsonl"
    good.write_text("".join(lines))
    ran = await infra_observer("validate", str(good), env=command_env())
    assert ran.returncode == 0, ran.stdout
    assert ran.stdout.splitlines()[: len(lines)] == [f"line {n}: OK" for n in range(1, 9)]

    events = [json.loads(line) for line in lines]
    del events[5]["resource"]["kubernetes.namespace"]  # kubernetes-pod
    events[3]["payload"]["succeeded"] = "2"  # transfer-completed
    events[4]["related"] = events[4]["related"][:1]  # docker-creation-failed: no worker
    corrupted = [json.dumps(event) for event in events]
    corrupted[0] = corrupted[0][:40]  # block-loaded: cut short
    ran = await infra_observer(
        "validate", "-", env=command_env(), stdin="\n".join(corrupted).encode()
    )
    assert ran.returncode == 1
    report = ran.stdout.splitlines()
    assert report[0] == "line 1: not JSON: Unterminated string starting at column 14"
    assert "line 2: OK" in report
    assert any(
        line.startswith("line 4: payload field 'succeeded' is string, expected integer")
        for line in report
    )
    assert any(line.startswith("line 5: related resource with role 'worker'") for line in report)
    assert any(line.startswith("line 6: resource label 'kubernetes.namespace'") for line in report)
    assert report[-1] == "8 events checked: 4 valid, 4 invalid"
    quiet = await infra_observer(
        "validate", "--quiet", "-", env=command_env(), stdin="\n".join(corrupted).encode()
    )
    assert quiet.returncode == 1
    assert quiet.stdout.splitlines() == [line for line in report if not line.endswith(": OK")]


async def test_bad_input_is_refused_with_exit_2() -> None:
    ran = await infra_observer(
        "emit", "pull-step", "--outcome", "executed", "--flow-run-id", "not-a-uuid",
        "--step-json", "{}", env=command_env(),
    )  # fmt: skip
    assert ran.returncode == 2
    assert "--flow-run-id: 'not-a-uuid' is not a UUID" in ran.stderr
    assert ran.stdout == ""
    ran = await infra_observer(
        "emit", "pull-step", "--outcome", "executed", "--flow-run-id", FLOW_RUN,
        "--step-json", '{"a.b": 1}', env=command_env(),
    )  # fmt: skip
    assert ran.returncode == 2
    assert "the inputs of a.b must be a JSON object" in ran.stderr


@pytest.mark.parametrize("family", ["docker-container", "docker-creation-failed"])
async def test_docker_families_without_a_worker_name_are_refused_with_exit_2(family: str) -> None:
    argv = [word for word in CASES[family] if word not in ("--worker-name", "docker-worker-1")]
    ran = await infra_observer("emit", *argv, env=command_env())
    assert ran.returncode == 2, ran.stderr
    assert "the following arguments are required: --worker-name" in ran.stderr
    assert "Traceback" not in ran.stderr
    assert ran.stdout == ""


def retry_flags(event: dict[str, Any]) -> str:
    return f"--id {event['id']} --occurred {event['occurred']}"


async def test_an_unreachable_server_fails_with_exit_1_and_prints_the_event(
    tmp_path: Path,
) -> None:
    api_url = f"http://127.0.0.1:{free_port()}/api"
    env = command_env(PREFECT_API_URL=api_url)
    ran = await infra_observer("emit", *CASES["block-loaded"], "--timeout", "1", env=env)
    assert ran.returncode == 1
    assert '"outcome":"undelivered"' in ran.stderr
    # The exact event, as one JSON line that conforms, with how to send it again.
    (line,) = ran.stdout.splitlines()
    event = json.loads(line)
    assert event["event"] == "prefect.block.s3-bucket.loaded"
    assert uuid.UUID(event["id"]).version == 4
    assert retry_flags(event) in ran.stderr
    assert api_url in ran.stderr
    checked = await infra_observer("validate", "-", env=command_env(), stdin=ran.stdout.encode())
    assert checked.returncode == 0, checked.stdout

    # With --out, appended to the file (one line per undelivered event), nothing on stdout.
    out = tmp_path / "undelivered.jsonl"
    for _ in range(2):
        ran = await infra_observer(
            "emit", *CASES["ecs-task"], "--timeout", "0.5", "--out", str(out), env=env
        )
        assert ran.returncode == 1
        assert ran.stdout == ""
        assert str(out) in ran.stderr
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert [event["event"] for event in kept] == ["prefect.ecs.task.stopped"] * 2
    assert kept[0]["id"] != kept[1]["id"]
    assert retry_flags(kept[1]) in ran.stderr


async def test_a_password_in_the_api_url_is_never_printed() -> None:
    secret = "s3cret-in-url"
    api_url = f"http://observer:{secret}@127.0.0.1:{free_port()}/api"
    ran = await infra_observer(
        "emit", *CASES["block-loaded"], "--timeout", "0.5", env=command_env(PREFECT_API_URL=api_url)
    )
    assert ran.returncode == 1
    assert "127.0.0.1" in ran.stderr  # the advice names where it tried
    assert secret not in ran.stderr
    assert secret not in ran.stdout


@pytest.mark.parametrize("mode", [Mode.REFUSE, Mode.ERROR_500], ids=lambda mode: mode.value)
async def test_an_undelivered_event_retried_with_its_id_is_stored_once(
    prefect: PrefectPeer, mode: Mode
) -> None:
    """The events API refuses connections, or answers 500: the event is printed; the same
    command with the printed id and time, once the API is back, stores it, once."""
    proxy = await FaultyProxy(prefect.api_url).start()
    try:
        env = command_env(PREFECT_API_URL=proxy.api_url)
        await proxy.set_mode(mode)
        failed = await infra_observer("emit", *CASES["pull-step"], "--timeout", "1", env=env)
        assert failed.returncode == 1, failed.stderr
        printed = json.loads(failed.stdout)
        assert retry_flags(printed) in failed.stderr
        if mode is Mode.ERROR_500:
            assert proxy.posts(), "the event was never offered to the API"
        await proxy.set_mode(Mode.PASS)
        argv = with_id(
            printed["id"], CASES["pull-step"], occurred=datetime.fromisoformat(printed["occurred"])
        )
        retried = await infra_observer(*argv, env=env)
        assert retried.returncode == 0, retried.stderr
        assert retried.stdout == ""
    finally:
        await proxy.stop()
    stored = await prefect.wait_for_events(expected_count=1, ids=[printed["id"]], settle=1.5)
    assert len(stored) == 1
    same_event(stored[0], printed)
