"""The ECS loop's pure helpers: error advice, batch order, retry delays, memory, region."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
)
from prometheus_client import CollectorRegistry

from infra_observer.config import EcsSettings
from infra_observer.errors import ConfigError, InputError
from infra_observer.metrics import Metrics
from infra_observer.sources.ecs import advice, clients, messages, tags
from infra_observer.sources.ecs.memory import TaskMemory
from infra_observer.sources.ecs.source import EcsSource
from tests.handoff import RecordingHandoff

QUEUE_URL = "https://sqs.eu-west-1.amazonaws.com/111122223333/ecs-events"


def settings(**values: Any) -> EcsSettings:
    return EcsSettings(**{"queue_url": QUEUE_URL, **values})


def source(**values: Any) -> EcsSource:
    return EcsSource(
        settings=settings(**values),
        handoff=RecordingHandoff(accepts=False),
        metrics=Metrics(CollectorRegistry()),
    )


def client_error(code: str, operation: str, message: str = "nope") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


@pytest.mark.parametrize(
    ("code", "operation", "action"),
    [
        ("AccessDenied", "ReceiveMessage", "sqs:ReceiveMessage"),
        ("AccessDeniedException", "DescribeTasks", "ecs:DescribeTasks"),
        ("403", "DeleteMessage", "sqs:DeleteMessage"),
    ],
)
def test_refusals_name_the_missing_iam_action(code: str, operation: str, action: str) -> None:
    error = client_error(code, operation)

    explanation = source()._explain(error)

    assert explanation.startswith(f"{action} was denied ({code}): allow {action}")
    assert "deploy/aws/" in explanation
    assert advice.missing_permission(error) == action


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            client_error("AWS.SimpleQueueService.NonExistentQueue", "ReceiveMessage"),
            f"queue {QUEUE_URL} does not exist",
        ),
        (client_error("InvalidClientTokenId", "ReceiveMessage"), "rejected the credentials"),
        (client_error("ThrottlingException", "DescribeTasks", "Rate exceeded"), "Rate exceeded"),
        (NoCredentialsError(), "no AWS credentials found"),
        (EndpointConnectionError(endpoint_url="http://x"), "check network access"),
    ],
)
def test_other_failures_say_what_to_check(
    error: ClientError | BotoCoreError, expected: str
) -> None:
    assert expected in source()._explain(error)
    assert advice.missing_permission(error) is None


@pytest.mark.parametrize(
    ("task_arn", "cluster"),
    [
        ("arn:aws:ecs:eu-west-1:111122223333:task/prefect/abc123", "prefect"),
        ("arn:aws:ecs:eu-west-1:111122223333:task/abc123", "default"),
    ],
)
def test_the_cluster_is_read_from_the_task_arn(task_arn: str, cluster: str) -> None:
    assert tags.cluster_of(task_arn) == cluster


def message(body: str, *, receive_count: int = 1) -> dict[str, Any]:
    return {
        "MessageId": body[:8],
        "ReceiptHandle": "r",
        "Body": body,
        "Attributes": {"ApproximateReceiveCount": str(receive_count)},
    }


def envelope(version: int, status: str = "RUNNING") -> str:
    return json.dumps(
        {
            "id": f"00000000-0000-0000-0000-{version:012d}",
            "detail-type": "ECS Task State Change",
            "source": "aws.ecs",
            "time": "2026-11-25T06:00:00Z",
            "detail": {"taskArn": "arn:t/c/1", "lastStatus": status, "version": version},
        }
    )


def test_a_batch_is_handled_in_version_order_invalid_first() -> None:
    batch = [message(envelope(5)), message("garbage"), message(envelope(3))]

    ordered = messages.in_task_order(batch)

    kinds = [
        parsed.version if not isinstance(parsed, InputError) else "invalid" for _, parsed in ordered
    ]
    assert kinds == ["invalid", 3, 5]


@pytest.mark.parametrize(
    ("receive_count", "backoff_max", "delay"),
    [(1, 30.0, 1), (2, 30.0, 2), (5, 30.0, 16), (6, 30.0, 30), (1000, 30.0, 30), (3, 1.0, 1)],
)
def test_retry_delays_grow_with_the_receive_count(
    receive_count: int, backoff_max: float, delay: int
) -> None:
    assert (
        messages.retry_delay(message("x", receive_count=receive_count), longest=backoff_max)
        == delay
    )


def test_the_task_memory_is_bounded() -> None:
    evictions: list[None] = []
    memory = TaskMemory(limit=2, on_evict=lambda: evictions.append(None))
    memory.get("a").version = 1
    memory.get("b")
    memory.get("a")  # a is now the most recently used
    memory.get("c")  # evicts b

    assert memory.get("a").version == 1
    assert len(evictions) == 1
    assert memory.get("b").version is None  # forgotten, so new (and evicts c)


@pytest.mark.parametrize(
    ("queue_url", "region"),
    [
        (QUEUE_URL, "eu-west-1"),
        ("https://sqs.cn-north-1.amazonaws.com.cn/1/q", "cn-north-1"),
    ],
)
def test_the_region_falls_back_to_the_queue_url(
    queue_url: str, region: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")

    from aiobotocore.session import get_session

    session = get_session()
    assert clients.region(settings(queue_url=queue_url), session) == region
    assert clients.region(settings(queue_url=queue_url, region="us-east-2"), session) == "us-east-2"


def test_no_region_anywhere_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    from aiobotocore.session import get_session

    with pytest.raises(ConfigError, match="INFRA_OBSERVER_ECS_REGION"):
        clients.region(settings(queue_url="http://127.0.0.1:5000/1/q"), get_session())
