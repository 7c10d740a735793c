"""The pure ECS step: EventBridge envelopes in, translations (events, or why none) out."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from infra_observer.errors import InputError
from infra_observer.events.catalog import ECS_TASK_STATUSES
from infra_observer.events.model import Event
from infra_observer.sources.base import Problem, Translation
from infra_observer.sources.ecs.tags import tags_of
from infra_observer.sources.ecs.translate import (
    TagFilter,
    TaskStateChange,
    parse_message,
    parse_tag_filters,
    translate,
)

EVENT_ID = "3317b2af-7005-947d-b652-f55e762e571a"
TASK_ID = "b99d40b3-5176-4f71-9a52-9dbd6f1cebef"
TASK_ARN = f"arn:aws:ecs:us-west-2:111122223333:task/prefect/{TASK_ID}"
CLUSTER_ARN = "arn:aws:ecs:us-west-2:111122223333:cluster/prefect"
TASK_DEF_ARN = "arn:aws:ecs:us-west-2:111122223333:task-definition/flow:3"
FLOW_RUN = "7d3d4f3e-0f5c-4d4b-9b8f-0d3f2b9f6a11"
DEPLOYMENT = "1c6e6b1a-3b0a-4a57-a1a4-8e0c2f1d2e33"
FLOW = "9b1f5c44-51b1-4d3e-8d0a-0e6b9c1f7a55"
POOL = "e0d4b3a2-6c1f-4f4e-9a3b-2f5c8d7e6b77"


def envelope(**overrides: Any) -> dict[str, Any]:
    detail_overrides = overrides.pop("detail", {})
    detail: object = (
        _DROP
        if detail_overrides is _DROP
        else {
            "taskArn": TASK_ARN,
            "clusterArn": CLUSTER_ARN,
            "taskDefinitionArn": TASK_DEF_ARN,
            "lastStatus": "RUNNING",
            "desiredStatus": "RUNNING",
            "version": 3,
            "containers": [],
            **(detail_overrides if detail_overrides is not _DROP else {}),
        }
    )
    body = {
        "version": "0",
        "id": EVENT_ID,
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": "111122223333",
        "time": "2026-11-25T06:01:02Z",
        "region": "us-west-2",
        "resources": [TASK_ARN],
        "detail": detail,
        **overrides,
    }
    return {k: v for k, v in body.items() if v is not _DROP}


_DROP = object()


def drop_detail(key: str) -> dict[str, Any]:
    body = envelope()
    del body["detail"][key]
    return body


TAGS = {
    "prefect.io/flow-run-id": FLOW_RUN,
    "prefect.io/flow-run-name": "crimson-fox",
    "prefect.io/deployment-id": DEPLOYMENT,
    "prefect.io/deployment-name": "nightly",
    "prefect.io/flow-id": FLOW,
    "prefect.io/flow-name": "etl",
    "prefect.io/work-pool-id": POOL,
    "prefect.io/work-pool-name": "ecs-pool",
    "prefect.io/worker-name": "ECS Worker 1",
}


def change(*, version: int | None = 3, status: str = "running") -> TaskStateChange:
    return parse_message(
        json.dumps(envelope(detail={"lastStatus": status.upper(), "version": version}))
    )


def verdict(result: Translation[int]) -> str:
    """What became of the change, in one word: `emit`, `skipped`, or why it is unchanged."""
    if result.events:
        assert result.skipped is None
        assert result.unchanged is None
        return "emit"
    if result.skipped is not None:
        assert result.unchanged is None
        return "skipped"
    assert result.unchanged is not None
    return result.unchanged


def event_of(result: Translation[int]) -> Event:
    (event,) = result.events
    return event


@pytest.mark.parametrize("status", ECS_TASK_STATUSES)
def test_every_status_becomes_its_event(status: str) -> None:
    body = json.dumps(envelope(detail={"lastStatus": status.upper()}))

    result = translate(parse_message(body), None, tags=TAGS)

    assert verdict(result) == "emit"
    event = event_of(result)
    assert event.event == f"prefect.ecs.task.{status}"
    assert event.id == uuid.UUID(EVENT_ID)
    assert event.occurred == datetime(2026, 11, 25, 6, 1, 2, tzinfo=UTC)
    assert event.follows is None
    assert dict(event.resource) == {
        "prefect.resource.id": f"prefect.ecs.task.{TASK_ID}",
        "ecs.taskArn": TASK_ARN,
        "ecs.clusterArn": CLUSTER_ARN,
        "ecs.taskDefinitionArn": TASK_DEF_ARN,
    }
    assert dict(event.payload) == {}


def test_related_resources_come_from_the_tags() -> None:
    result = translate(change(), None, tags=TAGS)

    assert [dict(r) for r in event_of(result).related] == [
        {
            "prefect.resource.id": f"prefect.flow-run.{FLOW_RUN}",
            "prefect.resource.role": "flow-run",
            "prefect.resource.name": "crimson-fox",
        },
        {
            "prefect.resource.id": f"prefect.deployment.{DEPLOYMENT}",
            "prefect.resource.role": "deployment",
            "prefect.resource.name": "nightly",
        },
        {
            "prefect.resource.id": f"prefect.flow.{FLOW}",
            "prefect.resource.role": "flow",
            "prefect.resource.name": "etl",
        },
        {
            "prefect.resource.id": f"prefect.work-pool.{POOL}",
            "prefect.resource.role": "work-pool",
            "prefect.resource.name": "ecs-pool",
        },
        {
            "prefect.resource.id": "prefect.worker.ecs.ecs-worker-1",
            "prefect.resource.role": "worker",
            "prefect.resource.name": "ECS Worker 1",
            "prefect.worker-type": "ecs",
        },
    ]


def test_only_the_flow_run_tag_gives_only_the_flow_run() -> None:
    result = translate(change(), None, tags={"prefect.io/flow-run-id": FLOW_RUN})

    assert [r["prefect.resource.role"] for r in event_of(result).related] == ["flow-run"]


def test_an_id_tag_that_is_not_a_uuid_is_left_out_and_reported() -> None:
    tags = {"prefect.io/flow-run-id": FLOW_RUN, "prefect.io/deployment-id": "nope"}

    result = translate(change(), None, tags=tags)

    assert verdict(result) == "emit"
    assert [r["prefect.resource.role"] for r in event_of(result).related] == ["flow-run"]
    assert result.problems == [
        Problem("tag", "label prefect.io/deployment-id='nope' is not a UUID")
    ]


def test_missing_cluster_and_task_definition_are_left_out() -> None:
    body = envelope(detail={"clusterArn": None, "taskDefinitionArn": ""})

    result = translate(parse_message(json.dumps(body)), None, tags=TAGS)

    assert set(event_of(result).resource) == {"prefect.resource.id", "ecs.taskArn"}


@pytest.mark.parametrize(
    ("tags", "filters", "expected"),
    [
        ({}, (), "not_selected"),
        ({"team": "data"}, (), "not_selected"),
        ({**TAGS, "team": "data"}, (TagFilter("team"),), "emit"),
        ({**TAGS, "team": "data"}, (TagFilter("team", "data"),), "emit"),
        ({**TAGS, "team": "ops"}, (TagFilter("team", "data"),), "not_selected"),
        (TAGS, (TagFilter("team"),), "not_selected"),
        ({**TAGS, "a": "1"}, (TagFilter("a"), TagFilter("b")), "not_selected"),
        # Tagged, so Prefect's, but naming no usable flow run: skipped and reported.
        ({"prefect.io/flow-run-id": ""}, (), "skipped"),
        ({"prefect.io/flow-run-id": "run-7"}, (), "skipped"),
        (
            {"prefect.io/flow-run-id": "", "team": "ops"},
            (TagFilter("team", "data"),),
            "not_selected",
        ),
    ],
)
def test_selection_by_flow_run_tag_and_filters(
    tags: dict[str, str], filters: tuple[TagFilter, ...], expected: str
) -> None:
    result = translate(change(), None, tags=tags, tag_filters=filters)

    assert verdict(result) == expected
    assert result.key == TASK_ARN
    assert result.state == (3 if expected == "emit" else None)


@pytest.mark.parametrize(
    ("version", "last_version", "expected", "remembered"),
    [
        (3, None, "emit", 3),
        (4, 3, "emit", 4),
        (3, 3, "duplicate", 3),
        (2, 3, "stale", 3),
        (None, 3, "emit", 3),
        (0, None, "emit", 0),
        (None, None, "emit", None),
    ],
)
def test_versions_recognise_stale_and_duplicate_deliveries(
    version: int | None, last_version: int | None, expected: str, remembered: int | None
) -> None:
    result = translate(change(version=version), last_version, tags=TAGS)

    assert verdict(result) == expected
    assert result.state == remembered


@pytest.mark.parametrize(
    ("value", "reason", "detail"),
    [
        ("", "flow_run_id_empty", "prefect.io/flow-run-id is empty"),
        ("run-7", "flow_run_id_not_uuid", "prefect.io/flow-run-id='run-7' is not a UUID"),
        (FLOW_RUN[:-2], "flow_run_id_not_uuid", f"prefect.io/flow-run-id={FLOW_RUN[:-2]!r}"),
    ],
)
def test_an_unusable_flow_run_tag_skips_the_task_and_says_why(
    value: str, reason: str, detail: str
) -> None:
    tags = {**TAGS, "prefect.io/flow-run-id": value}

    result = translate(change(version=1), None, tags=tags)

    assert verdict(result) == "skipped"
    assert result.events == []
    assert result.skipped is not None
    assert result.skipped.reason == reason
    assert detail in result.skipped.detail


def test_untagged_task_is_not_selected_whatever_its_version() -> None:
    result = translate(change(version=1), 5, tags={})

    assert verdict(result) == "not_selected"
    assert result.state == 5


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON list, not an object"),
        ('"text"', "JSON str, not an object"),
        (json.dumps(envelope(source="aws.ec2")), "not an ECS task state change"),
        (
            json.dumps(envelope(**{"detail-type": "ECS Container Instance State Change"})),
            "not an ECS task state change",
        ),
        (json.dumps(envelope(**{"detail-type": _DROP})), "not an ECS task state change"),
        (json.dumps(envelope(detail=_DROP)), "no `detail` object"),
        (json.dumps({**envelope(), "detail": "x"}), "no `detail` object"),
        (json.dumps(envelope(id=_DROP)), "envelope `id` is None"),
        (json.dumps(envelope(id="abc")), "envelope `id` 'abc' is not a UUID"),
        (json.dumps(envelope(time=_DROP)), "envelope `time` is None"),
        (json.dumps(envelope(time="yesterday")), "not an RFC 3339 timestamp"),
        (json.dumps(envelope(time="2026-11-25T06:01:02")), "has no time zone"),
        (json.dumps(drop_detail("taskArn")), "detail.taskArn is None"),
        (json.dumps(envelope(detail={"taskArn": ""})), "detail.taskArn is ''"),
        (json.dumps(drop_detail("lastStatus")), "detail.lastStatus is None"),
        (json.dumps(envelope(detail={"lastStatus": "EXPLODED"})), "not one of PROVISIONING"),
        (json.dumps(envelope(detail={"version": "7"})), "detail.version is '7'"),
        (json.dumps(envelope(detail={"version": -1})), "not a non-negative integer"),
        (json.dumps(envelope(detail={"version": True})), "not a non-negative integer"),
        (json.dumps(envelope(detail={"clusterArn": 5})), "detail.clusterArn is 5"),
    ],
)
def test_bad_messages_raise_input_error_with_the_reason(body: str, reason: str) -> None:
    with pytest.raises(InputError, match=reason.replace("(", r"\(")):
        parse_message(body)


def test_detail_type_drop_helper_really_drops() -> None:
    assert "detail-type" not in envelope(**{"detail-type": _DROP})


def test_a_missing_version_is_accepted() -> None:
    assert parse_message(json.dumps(drop_detail("version"))).version is None


def test_time_with_offset_is_turned_into_utc() -> None:
    parsed = parse_message(json.dumps(envelope(time="2026-11-25T07:01:02+01:00")))

    assert parsed.occurred == datetime(2026, 11, 25, 6, 1, 2, tzinfo=UTC)


def test_bytes_bodies_are_read() -> None:
    assert parse_message(json.dumps(envelope()).encode()).task_arn == TASK_ARN


def test_tags_of_describe_tasks_output() -> None:
    task = {"tags": [{"key": "a", "value": "1"}, {"key": "b"}, {"value": "orphan"}]}

    assert tags_of(task) == {"a": "1", "b": ""}
    assert tags_of({}) == {}


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        (["team"], (TagFilter("team"),)),
        (["team=data", " env = prod "], (TagFilter("team", "data"), TagFilter("env", "prod"))),
        (["empty="], (TagFilter("empty", ""),)),
    ],
)
def test_tag_filters_are_parsed(text: list[str], parsed: tuple[TagFilter, ...]) -> None:
    assert parse_tag_filters(text) == parsed


def test_a_tag_filter_without_key_is_refused() -> None:
    with pytest.raises(ValueError, match="has no key"):
        parse_tag_filters(["=x"])


# --- diagnosis --------------------------------------------------------------------------------


def test_a_stopped_task_carries_its_diagnosis_label() -> None:
    detail = {
        "lastStatus": "STOPPED",
        "stopCode": "EssentialContainerExited",
        "stoppedReason": "Essential container in task exited",
        "containers": [
            {
                "name": "prefect",
                "exitCode": 137,
                "reason": "OutOfMemoryError: Container killed due to memory usage",
            }
        ],
    }
    change = parse_message(json.dumps(envelope(detail=detail)))
    assert change.problems == ()
    result = translate(change, None, tags=TAGS)
    assert event_of(result).resource["ecs.diagnosis"] == "OutOfMemoryError"


def test_a_task_without_diagnosis_has_no_label() -> None:
    detail: dict[str, Any] = {
        "lastStatus": "STOPPED",
        "stopCode": "EssentialContainerExited",
        "containers": [{"name": "prefect", "exitCode": 0}],
    }
    change = parse_message(json.dumps(envelope(detail=detail)))
    result = translate(change, None, tags=TAGS)
    assert "ecs.diagnosis" not in event_of(result).resource


@pytest.mark.parametrize(
    ("detail", "problem"),
    [
        ({"stopCode": 7}, "detail.stopCode is 7, not a string"),
        ({"containers": "none"}, "detail.containers is 'none', not a list"),
        ({"containers": [5]}, "detail.containers[0] is 5, not an object"),
        (
            {"containers": [{"exitCode": "1"}]},
            "detail.containers[0].exitCode is '1', not an integer",
        ),
        (
            {"containers": [{"exitCode": True}]},
            "detail.containers[0].exitCode is True, not an integer",
        ),
        ({"containers": [{"reason": ["x"]}]}, "detail.containers[0].reason is ['x'], not a string"),
    ],
)
def test_unreadable_diagnosis_fields_are_reported_and_the_change_is_kept(
    detail: dict[str, Any], problem: str
) -> None:
    change = parse_message(json.dumps(envelope(detail=detail)))
    assert change.problems == (problem,)
    result = translate(change, None, tags=TAGS)
    assert verdict(result) == "emit"
    assert result.problems == [Problem("detail", problem)]
