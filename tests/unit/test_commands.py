"""`emit` flags → events, its input errors, and `validate` line by line (no peers)."""

from __future__ import annotations

import argparse
import io
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra_observer import cli
from infra_observer.commands import CommandInputError, emit, validate
from infra_observer.events.conformance import check_against_catalog
from infra_observer.events.handoff import Outcome
from infra_observer.events.model import Event

FLOW_RUN = "0f8d5b1c-2a3e-4f60-9b7d-1c2e3f4a5b6c"
DEPLOYMENT = "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d"
EVENT_ID = "7d3c5c1e-8f7a-4c2b-9e51-2f0a6b1d4e90"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="infra-observer")
    emit.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["emit", *argv])


def build(*argv: str) -> Event:
    return emit.event_from_args(parse(*argv))


def roles(event: Event) -> dict[str, dict[str, str]]:
    return {dict(labels)["prefect.resource.role"]: dict(labels) for labels in event.related}


def test_kubernetes_pod_flags_map_to_the_builder_inputs() -> None:
    event = build(
        "kubernetes-pod", "--phase", "evicted", "--eviction-reason", "Evicted",
        "--pod-uid", "u-1", "--pod-name", "p", "--namespace", "ns",
        "--flow-run-id", FLOW_RUN, "--flow-run-name", "crimson-otter",
        "--deployment-id", DEPLOYMENT, "--worker-name", "K8s Worker",
        "--id", EVENT_ID, "--occurred", "2026-03-01T13:00:00+01:00",
    )  # fmt: skip
    assert event.event == "prefect.kubernetes.pod.evicted"
    assert event.id == uuid.UUID(EVENT_ID)
    assert event.occurred == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert event.resource["kubernetes.reason"] == "Evicted"
    related = roles(event)
    assert sorted(related) == ["deployment", "flow-run", "worker"]
    assert related["flow-run"]["prefect.resource.name"] == "crimson-otter"
    assert related["worker"]["prefect.resource.id"] == "prefect.worker.kubernetes.k8s-worker"
    assert related["worker"]["prefect.worker-type"] == "kubernetes"
    assert check_against_catalog(event) == []


def test_without_id_and_time_a_random_uuid4_and_now() -> None:
    before = datetime.now(UTC)
    event = build("block-loaded", "--block-type", "s3-bucket", "--block-document-id", EVENT_ID)
    assert event.id.version == 4
    assert before <= event.occurred <= datetime.now(UTC)
    assert event.resource["prefect.resource.name"] == EVENT_ID


def test_docker_creation_failed_names_the_managing_worker() -> None:
    event = build(
        "docker-creation-failed", "--container-id", "crimson-otter",
        "--worker-name", "docker-1", "--work-pool-id", DEPLOYMENT,
    )  # fmt: skip
    assert event.event == "prefect.docker.container.creation-failed"
    assert sorted(roles(event)) == ["work-pool", "worker"]
    assert roles(event)["worker"]["prefect.worker-type"] == "docker"


@pytest.mark.parametrize("family", ["docker-container", "docker-creation-failed"])
def test_docker_families_require_the_worker_name(
    family: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = ["--status", "exited"] if family == "docker-container" else []
    with pytest.raises(SystemExit) as exited:
        parse(family, *status, "--container-id", "c-1")
    assert exited.value.code == 2
    assert "the following arguments are required: --worker-name" in capsys.readouterr().err


def test_pull_step_takes_the_flow_run_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(emit.FLOW_RUN_ENV, FLOW_RUN)
    event = build(
        "pull-step", "--outcome", "executed", "--step-json",
        '{"prefect.deployments.steps.set_working_directory": {"directory": "/opt/flows"}}',
    )  # fmt: skip
    assert event.resource_id == f"prefect.flow-run.{FLOW_RUN}"
    assert event.related == ()
    assert event.payload == {
        "index": 0,
        "qualified_name": "prefect.deployments.steps.set_working_directory",
        "step_name": "set_working_directory",
        "id": None,
        "inputs": {"directory": "/opt/flows"},
    }


def test_transfer_completed_carries_its_counts() -> None:
    event = build(
        "transfer-completed", "--transfer-id", EVENT_ID, "--description", "a → b",
        "--source-profile", "a", "--target-profile", "b", "--source-url", "http://a",
        "--target-url", "http://b", "--total-resources", "4",
        "--succeeded", "2", "--failed", "1", "--skipped", "1",
    )  # fmt: skip
    assert event.event == "prefect.workspace.transfer.completed"
    assert (event.payload["succeeded"], event.payload["failed"], event.payload["skipped"]) == (
        2,
        1,
        1,
    )


BAD_FLAGS = [
    (["block-loaded", "--block-type", "S3 Bucket", "--block-document-id", EVENT_ID], "not a slug"),
    (["block-loaded", "--block-type", "s3", "--block-document-id", "42"], "'42' is not a UUID"),
    (
        ["pull-step", "--outcome", "executed", "--flow-run-id", FLOW_RUN, "--step-json", "{"],
        "not valid JSON",
    ),
    (
        ["pull-step", "--outcome", "executed", "--flow-run-id", FLOW_RUN, "--step-json", "[]"],
        "exactly one key",
    ),
    (
        ["ecs-task", "--status", "gone", "--task-arn", "arn:x/y", "--flow-run-id", FLOW_RUN],
        "invalid choice: 'gone'",
    ),
    (
        ["block-loaded", "--block-type", "s3", "--block-document-id", EVENT_ID,
         "--occurred", "2026-03-01T12:00:00"],
        "has no time zone",
    ),
    (
        ["block-loaded", "--block-type", "s3", "--block-document-id", EVENT_ID,
         "--occurred", "yesterday"],
        "not an RFC 3339 timestamp",
    ),
    (
        ["transfer-started", "--transfer-id", EVENT_ID, "--description", "d",
         "--source-profile", "a", "--target-profile", "b", "--source-url", "u",
         "--target-url", "v", "--total-resources", "-1"],
        "negative",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "expected"), BAD_FLAGS)
def test_bad_flags_are_named(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(*argv)
    assert exited.value.code == 2
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["kubernetes-pod", "--phase", "failed", "--eviction-reason", "Evicted",
             "--pod-uid", "u", "--pod-name", "p", "--namespace", "n", "--flow-run-id", FLOW_RUN],
            "--eviction-reason goes with --phase evicted",
        ),
        (
            ["ecs-task", "--status", "running", "--task-arn", "task-1",
             "--flow-run-id", FLOW_RUN],
            "is not a task ARN",
        ),
        (
            ["transfer-completed", "--transfer-id", EVENT_ID, "--description", "d",
             "--source-profile", "a", "--target-profile", "b", "--source-url", "u",
             "--target-url", "v", "--total-resources", "1",
             "--succeeded", "1", "--failed", "1", "--skipped", "0"],
            "more than --total-resources 1",
        ),
    ],
)  # fmt: skip
def test_contradicting_flags_are_refused(argv: list[str], expected: str) -> None:
    with pytest.raises(CommandInputError, match=expected):
        emit.event_from_args(parse(*argv))


def an_event() -> Event:
    return build(
        "block-loaded", "--block-type", "s3", "--block-document-id", EVENT_ID,
        "--id", EVENT_ID, "--occurred", "2026-03-01T13:00:00.250+01:00",
    )  # fmt: skip


def test_an_undelivered_event_is_kept_on_stdout_when_out_cannot_be_written(
    tmp_path: Path,
) -> None:
    stdout = io.BytesIO()
    out = tmp_path / "no-such-dir" / "undelivered.jsonl"
    kept = emit.keep_undelivered(an_event(), out=out, stdout=stdout)
    assert kept == f"printed on stdout ({out} could not be written)"
    assert stdout.getvalue() == an_event().to_json() + b"\n"


def test_the_advice_says_how_to_retry_or_why_not() -> None:
    event = an_event()
    undelivered = emit.not_delivered_advice(
        event, outcome=Outcome.UNDELIVERED, kept="printed on stdout", destination="http://x/api"
    )
    assert f"--id {EVENT_ID} --occurred 2026-03-01T12:00:00.250000Z" in undelivered
    assert "not delivered to http://x/api; it is printed on stdout" in undelivered
    assert json.loads(event.to_json())["occurred"] == "2026-03-01T12:00:00.250000Z"
    rejected = emit.not_delivered_advice(
        event, outcome=Outcome.REJECTED, kept="appended to f", destination="http://x/api"
    )
    assert "refused as invalid" in rejected
    assert "--id" not in rejected


# --- validate ------------------------------------------------------------------------------


def good_line() -> bytes:
    return build(
        "block-loaded", "--block-type", "s3", "--block-document-id", EVENT_ID,
        "--id", EVENT_ID, "--occurred", "2026-03-01T12:00:00Z",
    ).to_json()  # fmt: skip


def test_a_line_read_back_from_the_api_conforms() -> None:
    stored = json.loads(good_line()) | {"received": "2026-03-01T12:00:01.5+00:00"}
    assert validate.check_line(json.dumps(stored).encode()) == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"{", "not JSON: Expecting property name enclosed in double quotes at column 2"),
        (b"nope", "not JSON: Expecting value at column 1"),
        (b'{"a": 1} {}', "not JSON: Extra data at column 10"),
        (b'{"a": NaN}', "not JSON: unexpected character, expected a JSON value at column 7"),
        (b'{"a": "\xff"}', "not JSON: not UTF-8 (byte 0xff at column 8)"),
        (b"[]", "not an event: a JSON array, expected a JSON object"),
        (b"null", "not an event: null, expected a JSON object"),
        (b'{"event": "x"}', "required field 'occurred' is missing"),
        (
            json.dumps(json.loads(good_line()) | {"occurred": "2026-03-01T12:00:00"}).encode(),
            "occurred '2026-03-01T12:00:00' has no time zone (add one, e.g. Z for UTC)",
        ),
        (
            json.dumps(json.loads(good_line()) | {"occurred": "yesterday"}).encode(),
            "occurred 'yesterday' is not an RFC 3339 timestamp",
        ),
        (
            json.dumps(json.loads(good_line()) | {"id": "42"}).encode(),
            "id '42' is not a UUID",
        ),
        (
            json.dumps(json.loads(good_line()) | {"source": "me"}).encode(),
            "field 'source' is not part of an event (its fields: occurred, event, resource, "
            "related, payload, id, follows)",
        ),
        (
            json.dumps(json.loads(good_line()) | {"resource": {"prefect.resource.id": 7}}).encode(),
            "resource label 'prefect.resource.id' must be a string, not a number",
        ),
        (
            json.dumps(json.loads(good_line()) | {"related": [[]]}).encode(),
            "related[0] must be a JSON object, not an array",
        ),
        (
            json.dumps(json.loads(good_line()) | {"payload": []}).encode(),
            "payload must be a JSON object, not an array",
        ),
        (
            json.dumps(json.loads(good_line()) | {"event": "prefect.block.s3.saved"}).encode(),
            "not in the infrastructure events catalog",
        ),
        (
            json.dumps(json.loads(good_line()) | {"related": []}).encode(),
            "role 'block-type' is missing",
        ),
        (
            json.dumps(
                json.loads(good_line()) | {"follows": json.loads(good_line())["id"]}
            ).encode(),
            "event follows itself",
        ),
    ],
)
def test_each_bad_line_is_explained(raw: bytes, expected: str) -> None:
    problems = validate.check_line(raw)
    assert any(expected in problem for problem in problems), problems


def test_lines_are_numbered_as_in_the_file_and_blank_ones_skipped() -> None:
    reports = list(validate.check_lines([good_line() + b"\n", b"\n", b"{\n", good_line()]))
    assert [(report.line, report.ok) for report in reports] == [(1, True), (3, False), (4, True)]


def test_jargon_is_not_passed_through() -> None:
    problems = validate.check_line(b'{"event": "x", "resource": {"a": 1}}')
    for problem in problems:
        assert "Input should" not in problem, problem
        assert "Field required" not in problem, problem


@pytest.mark.parametrize(
    ("checked", "failed", "expected"),
    [
        (0, 0, "no events found: the input is empty or blank"),
        (1, 0, "1 event checked: 1 valid, 0 invalid"),
        (1, 1, "1 event checked: 0 valid, 1 invalid"),
        (3, 1, "3 events checked: 2 valid, 1 invalid"),
    ],
)
def test_the_summary_counts_in_words(checked: int, failed: int, expected: str) -> None:
    assert validate.Summary(checked=checked, failed=failed).text() == expected


def test_validate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.jsonl"
    good.write_bytes(good_line() + b"\n")
    assert cli.main(["validate", str(good)]) == cli.EXIT_OK
    assert capsys.readouterr().out == "line 1: OK\n1 event checked: 1 valid, 0 invalid\n"
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"\n")
    assert cli.main(["validate", str(empty)]) == cli.EXIT_FAILURE
    assert capsys.readouterr().out == "no events found: the input is empty or blank\n"
    assert cli.main(["validate", str(tmp_path / "missing")]) == cli.EXIT_USAGE
    assert "cannot read" in capsys.readouterr().err


def test_validate_quiet_prints_only_problems_and_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(b"\n".join([good_line(), b"nope", good_line()]) + b"\n")
    assert cli.main(["validate", "--quiet", str(mixed)]) == cli.EXIT_FAILURE
    assert capsys.readouterr().out == (
        "line 2: not JSON: Expecting value at column 1\n3 events checked: 2 valid, 1 invalid\n"
    )
    good = tmp_path / "good.jsonl"
    good.write_bytes(good_line() + b"\n" + good_line() + b"\n")
    assert cli.main(["validate", "-q", str(good)]) == cli.EXIT_OK
    assert capsys.readouterr().out == ""
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert cli.main(["validate", "--quiet", str(empty)]) == cli.EXIT_FAILURE
    assert capsys.readouterr().out == "no events found: the input is empty or blank\n"
