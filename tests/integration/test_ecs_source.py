"""The ECS source against moto_server (SQS, ECS) and a real Prefect server.

moto emits no EventBridge events, so each test runs tagged tasks with moto's ECS and sends
the "ECS Task State Change" envelopes to its own queue itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import httpx
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from infra_observer.config import EcsSettings, EmitterSettings, PrefectSettings
from infra_observer.emitter import Emitter, Sink, events_api_sink
from infra_observer.errors import SourceError
from infra_observer.events.catalog import ECS_TASK_STATUSES
from infra_observer.metrics import Metrics
from infra_observer.sources.ecs.source import EcsSource
from tests.integration.ecs_support import ListSink, eventually
from tests.integration.source_runner import source_with_emitter
from tests.peers.moto import MotoPeer
from tests.peers.prefect import PrefectPeer

EMITTER = EmitterSettings(
    retry_initial_seconds=0.05,
    retry_max_seconds=0.5,
    flush_interval_seconds=0.05,
    request_timeout_seconds=5.0,
)
FLOW_RUN_TAG = "prefect.io/flow-run-id"


@dataclass
class Harness:
    moto: MotoPeer
    queue: dict[str, str]
    name: str
    metrics: Metrics = field(default_factory=lambda: Metrics(CollectorRegistry()))

    def use_queue(self, *, max_receive_count: int) -> None:
        self.queue = self.moto.create_queue(
            f"{self.name}-{max_receive_count}", dlq=True, max_receive_count=max_receive_count
        )

    def settings(self, **overrides: Any) -> EcsSettings:
        values: dict[str, Any] = {
            "enabled": True,
            "queue_url": self.queue["url"],
            "region": self.moto.region,
            "endpoint_url": self.moto.endpoint_url,
            "wait_time_seconds": 1,
            "visibility_timeout_seconds": 5,
            "concurrency": 4,
            "backoff_max_seconds": 1.0,
            **overrides,
        }
        return EcsSettings(**values)

    async def run_task(self, tags: dict[str, str] | None, *, cluster: str | None = None) -> Any:
        return await asyncio.to_thread(
            self.moto.run_fargate_task, cluster=cluster or self.name, tags=tags
        )

    async def send(self, task: Any, **kwargs: Any) -> dict[str, Any]:
        envelope: dict[str, Any] = await asyncio.to_thread(
            self.moto.send_task_state_change, self.queue["url"], task, **kwargs
        )
        return envelope

    async def send_raw(self, body: str) -> None:
        sqs = self.moto.client("sqs")
        await asyncio.to_thread(sqs.send_message, QueueUrl=self.queue["url"], MessageBody=body)

    async def counts(self, url_key: str = "url") -> tuple[int, int]:
        """(visible, in flight) messages of the queue (or of the DLQ with `dlq_url`)."""
        sqs = self.moto.client("sqs")
        response = await asyncio.to_thread(
            sqs.get_queue_attributes,
            QueueUrl=self.queue[url_key],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        attributes = response["Attributes"]
        return (
            int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        )

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def harness(moto: MotoPeer, monkeypatch: pytest.MonkeyPatch) -> Harness:
    # The standard credential chain, fed the way a deployment would feed it.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto.secret_access_key)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    name = f"ecs-{uuid.uuid4().hex[:10]}"
    queue = moto.create_queue(name, dlq=True, max_receive_count=2, visibility_timeout=5)
    return Harness(moto=moto, queue=queue, name=name)


@contextlib.asynccontextmanager
async def running(
    harness: Harness, sink: Sink, **settings: Any
) -> AsyncIterator[tuple[EcsSource, Emitter]]:
    emitter = Emitter(sink=sink, settings=EMITTER, metrics=harness.metrics)
    source = EcsSource(
        settings=harness.settings(**settings), handoff=emitter, metrics=harness.metrics
    )
    async with source_with_emitter(source, emitter, drain_seconds=5):
        yield source, emitter


async def queue_drained(harness: Harness) -> bool:
    return await harness.counts() == (0, 0)


def flow_run_tags() -> dict[str, str]:
    return {FLOW_RUN_TAG: str(uuid.uuid4()), "prefect.io/flow-run-name": "crimson-fox"}


def timeline() -> Callable[[int], dt.datetime]:
    """Seconds on a clock that started a minute ago (occurred times within one day)."""
    base = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=1)
    return lambda second: base + dt.timedelta(seconds=second)


def input_errors(logs: list[dict[str, Any]], *, kind: str) -> list[dict[str, Any]]:
    """The source's reports of malformed input of one kind."""
    return [
        log
        for log in logs
        if log["event"] == "input_error" and log["source"] == "ecs" and log["kind"] == kind
    ]


def task_id(task: Any) -> str:
    return str(task["taskArn"]).rsplit("/", 1)[-1]


async def test_every_status_is_delivered_to_prefect_and_chained(
    harness: Harness, prefect: PrefectPeer
) -> None:
    tags = {**flow_run_tags(), "prefect.io/worker-name": "ecs worker"}
    task = await harness.run_task(tags)
    at = timeline()
    sent = []
    for version, status in enumerate(ECS_TASK_STATUSES, start=1):
        sent.append(
            await harness.send(task, last_status=status.upper(), version=version, time=at(version))
        )
    prefect_settings = PrefectSettings(api_url=prefect.api_url)
    sink = events_api_sink(prefect_settings, EMITTER)
    try:
        async with running(harness, sink):
            await eventually(lambda: queue_drained(harness), "every message deleted")
    finally:
        await sink.aclose()

    resource_id = f"prefect.ecs.task.{task_id(task)}"
    stored = await prefect.wait_for_events(
        expected_count=len(ECS_TASK_STATUSES), resource_ids=[resource_id]
    )
    by_id = {event["id"]: event for event in stored}
    assert set(by_id) == {envelope["id"] for envelope in sent}
    previous = None
    for envelope, status in zip(sent, ECS_TASK_STATUSES, strict=True):
        event = by_id[envelope["id"]]
        assert event["event"] == f"prefect.ecs.task.{status}"
        assert dt.datetime.fromisoformat(event["occurred"]) == dt.datetime.fromisoformat(
            envelope["time"]
        )
        assert event["resource"] == {
            "prefect.resource.id": resource_id,
            "ecs.taskArn": task["taskArn"],
            "ecs.clusterArn": task["clusterArn"],
            "ecs.taskDefinitionArn": task["taskDefinitionArn"],
        }
        roles = {r["prefect.resource.role"]: r for r in event["related"]}
        assert roles["flow-run"]["prefect.resource.id"] == f"prefect.flow-run.{tags[FLOW_RUN_TAG]}"
        assert roles["worker"]["prefect.resource.id"] == "prefect.worker.ecs.ecs-worker"
        assert event["follows"] == previous
        previous = envelope["id"]


async def test_two_events_of_one_task_are_chained_and_stale_versions_skipped(
    harness: Harness,
) -> None:
    at = timeline()
    first_task = await harness.run_task(flow_run_tags())
    other_task = await harness.run_task(flow_run_tags())
    pending = await harness.send(first_task, last_status="PENDING", version=1, time=at(1))
    other = await harness.send(other_task, last_status="RUNNING", version=2, time=at(2))
    running_ = await harness.send(first_task, last_status="RUNNING", version=3, time=at(3))
    sink = ListSink()
    async with running(harness, sink):
        await eventually(lambda: queue_drained(harness), "three messages deleted")
        with capture_logs() as logs:
            # A late, older version of the first task after its newer one was delivered.
            await harness.send(first_task, last_status="PROVISIONING", version=0, time=at(0))
            await eventually(lambda: queue_drained(harness), "the stale message deleted")

    by_id = {str(event.id): event for event in sink.events}
    assert set(by_id) == {pending["id"], other["id"], running_["id"]}
    assert by_id[pending["id"]].follows is None
    assert str(by_id[running_["id"]].follows) == pending["id"]
    assert by_id[other["id"]].follows is None
    assert [log["reason"] for log in logs if log["event"] == "ecs_change_skipped"] == ["stale"]
    assert harness.sample("infra_observer_ecs_messages_total", result="stale") == 1


async def test_untagged_and_filtered_tasks_are_ignored(harness: Harness) -> None:
    untagged = await harness.run_task(None)
    other_tags = await harness.run_task({"team": "data"})
    wrong_team = await harness.run_task({**flow_run_tags(), "team": "ops"})
    selected = await harness.run_task({**flow_run_tags(), "team": "data"})
    for task in (untagged, other_tags, wrong_team):
        await harness.send(task, last_status="RUNNING")
    marker = await harness.send(selected, last_status="RUNNING")
    sink = ListSink()
    async with running(harness, sink, tag_filters=["team=data"]):
        await eventually(lambda: queue_drained(harness), "every message deleted")

    assert [str(event.id) for event in sink.events] == [marker["id"]]
    assert harness.sample("infra_observer_ecs_messages_total", result="not_selected") == 3
    assert await harness.counts("dlq_url") == (0, 0)


async def test_tasks_with_an_unusable_flow_run_tag_are_skipped_and_reported_once(
    harness: Harness,
) -> None:
    empty = await harness.run_task({FLOW_RUN_TAG: ""})
    not_uuid = await harness.run_task({FLOW_RUN_TAG: "run-42"})
    selected = await harness.run_task(flow_run_tags())
    for version, status in enumerate(("PENDING", "RUNNING"), start=1):
        for task in (empty, not_uuid):
            await harness.send(task, last_status=status, version=version)
    marker = await harness.send(selected, last_status="RUNNING")
    sink = ListSink()
    with capture_logs() as logs:
        async with running(harness, sink):
            await eventually(lambda: queue_drained(harness), "every message deleted")

    assert [str(event.id) for event in sink.events] == [marker["id"]]
    assert harness.sample("infra_observer_ecs_messages_total", result="skipped") == 4
    skipped = "infra_observer_objects_skipped_total"
    assert harness.sample(skipped, source="ecs", reason="flow_run_id_empty") == 1
    assert harness.sample(skipped, source="ecs", reason="flow_run_id_not_uuid") == 1
    reports = [e for e in logs if e["event"] == "object_skipped"]
    assert sorted((e["object"], e["reason"]) for e in reports) == sorted(
        [(empty["taskArn"], "flow_run_id_empty"), (not_uuid["taskArn"], "flow_run_id_not_uuid")]
    )
    assert any("'run-42' is not a UUID" in e["detail"] for e in reports)
    assert await harness.counts("dlq_url") == (0, 0)


async def test_readiness_is_exported_as_0_until_the_queue_answers(harness: Harness) -> None:
    # A queue that does not exist yet: every SQS call fails until it is created.
    name = f"{harness.name}-later"
    url = f"{harness.queue['url'].rsplit('/', 1)[0]}/{name}"
    source = EcsSource(
        settings=harness.settings(queue_url=url), handoff=ListSink(), metrics=harness.metrics
    )
    registry, ready = harness.metrics.registry, {"source": "ecs"}
    task = asyncio.create_task(source.run())
    try:
        await asyncio.sleep(0)
        assert registry.get_sample_value("infra_observer_source_ready", ready) == 0
        await eventually(async_value(lambda: ecs_reconnects(harness) >= 1), "a failed attempt")
        assert registry.get_sample_value("infra_observer_source_ready", ready) == 0
        assert not source.ready
        created = await asyncio.to_thread(harness.moto.create_queue, name)
        assert created["url"] == url
        await eventually(async_value(lambda: source.ready), "ready once the queue answers")
        assert registry.get_sample_value("infra_observer_source_ready", ready) == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def ecs_reconnects(harness: Harness) -> float:
    """Failed SQS calls of the source, whatever the error code."""
    return sum(
        sample.value
        for metric in harness.metrics.registry.collect()
        if metric.name == "infra_observer_source_reconnects"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["source"] == "ecs"
    )


def async_value(value: Callable[[], object]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(value())

    return check


async def test_a_redelivered_message_is_not_stored_twice(
    harness: Harness, prefect: PrefectPeer
) -> None:
    task = await harness.run_task(flow_run_tags())
    envelope = await harness.send(task, last_status="RUNNING", version=4)
    # At-least-once delivery: the very same message body arrives again.
    await harness.send_raw(json.dumps(envelope))
    # EventBridge may also repeat a change under a new id; `detail.version` tells.
    await harness.send(task, last_status="RUNNING", version=4)
    prefect_settings = PrefectSettings(api_url=prefect.api_url)
    sink = events_api_sink(prefect_settings, EMITTER)
    try:
        async with running(harness, sink):
            await eventually(lambda: queue_drained(harness), "all three messages deleted")
    finally:
        await sink.aclose()

    stored = await prefect.wait_for_events(
        expected_count=1, resource_ids=[f"prefect.ecs.task.{task_id(task)}"]
    )
    assert [event["id"] for event in stored] == [envelope["id"]]
    assert harness.sample("infra_observer_ecs_messages_total", result="delivered") == 1


async def test_unparseable_messages_go_to_the_dead_letter_queue(harness: Harness) -> None:
    task = await harness.run_task(flow_run_tags())
    await harness.send_raw("{this is not json")
    await harness.send_raw(json.dumps({"source": "aws.ec2", "detail-type": "EC2 State"}))
    valid = await harness.send(task, last_status="RUNNING")
    sink = ListSink()
    with capture_logs() as logs:
        async with running(harness, sink):
            # Received twice (max_receive_count=2), then SQS moves them to the DLQ.
            await eventually(
                lambda: _counts_are(harness, "dlq_url", (2, 0)), "both in the dead-letter queue"
            )
            await eventually(lambda: queue_drained(harness), "the main queue empty")

    assert [str(event.id) for event in sink.events] == [valid["id"]]
    reasons = {log["detail"] for log in input_errors(logs, kind="message")}
    assert any("not JSON" in reason for reason in reasons)
    assert any("not an ECS task state change" in reason for reason in reasons)
    assert harness.sample("infra_observer_input_errors_total", source="ecs", kind="message") >= 4


async def test_invalid_messages_are_deleted_when_configured(harness: Harness) -> None:
    await harness.send_raw("[]")
    sink = ListSink()
    async with running(harness, sink, delete_invalid_messages=True):
        await eventually(lambda: queue_drained(harness), "the invalid message deleted")

    assert await harness.counts("dlq_url") == (0, 0)
    assert harness.sample("infra_observer_input_errors_total", source="ecs", kind="message") == 1


async def test_tags_that_cannot_be_read_are_retried_until_they_can(harness: Harness) -> None:
    harness.use_queue(max_receive_count=1000)  # many retries, none moved to the DLQ
    task = await harness.run_task(flow_run_tags())
    # The event names a cluster that does not exist (yet): DescribeTasks fails with
    # ClusterNotFoundException, as it does for a task whose cluster is gone.
    late_cluster = f"{harness.name}-late"
    late_cluster_arn = task["clusterArn"].rsplit("/", 1)[0] + f"/{late_cluster}"
    envelope = await harness.send(task, last_status="RUNNING", cluster_arn=late_cluster_arn)
    sink = ListSink()
    with capture_logs() as logs:
        async with running(harness, sink):

            async def failed_twice() -> bool:
                return harness.sample("infra_observer_ecs_tag_reads_total", result="error") >= 2

            await eventually(failed_twice, "two failed tag reads")
            assert sink.events == []
            assert sum(await harness.counts()) == 1, "the message must stay in the queue"
            ecs = harness.moto.client("ecs")
            await asyncio.to_thread(ecs.create_cluster, clusterName=late_cluster)
            await eventually(lambda: queue_drained(harness), "the message deleted")

    assert [str(event.id) for event in sink.events] == [envelope["id"]]
    assert sink.events[0].resource["ecs.clusterArn"] == late_cluster_arn
    unreadable = [log for log in logs if log["event"] == "ecs_tags_unreadable"]
    assert unreadable[0]["reason"] == "ClusterNotFoundException"
    assert "ecs:DescribeTasks" in unreadable[0]["error"]


async def test_messages_stay_in_the_queue_while_the_sink_is_down(harness: Harness) -> None:
    tasks = [await harness.run_task(flow_run_tags()) for _ in range(3)]
    sink = ListSink()
    sink.down = True
    async with running(harness, sink):
        sent = [await harness.send(task, last_status="RUNNING") for task in tasks]

        async def all_held() -> bool:
            in_flight = harness.sample("infra_observer_ecs_messages_in_flight")
            return in_flight == 3 and sink.failed_sends >= 3

        await eventually(all_held, "three messages held while delivery fails")
        # Outlast the visibility timeout (5 s): only the renewals keep them from coming back.
        await asyncio.sleep(8)
        assert await harness.counts() == (0, 3)
        assert harness.sample("infra_observer_ecs_messages_in_flight") == 3
        assert sink.events == []
        sink.down = False
        await eventually(lambda: queue_drained(harness), "every message deleted")

    assert sorted(str(event.id) for event in sink.events) == sorted(e["id"] for e in sent)
    assert harness.sample("infra_observer_ecs_messages_total", result="delivered") == 3


async def test_check_reports_the_queue_and_explains_failures(harness: Harness) -> None:
    sink = ListSink()
    emitter = Emitter(sink=sink, settings=EMITTER, metrics=harness.metrics)
    source = EcsSource(settings=harness.settings(), handoff=emitter, metrics=harness.metrics)
    assert harness.queue["arn"] in await source.check()

    missing_url = harness.queue["url"] + "-missing"
    missing = EcsSource(
        settings=harness.settings(queue_url=missing_url),
        handoff=emitter,
        metrics=Metrics(CollectorRegistry()),
    )
    with pytest.raises(SourceError, match=r"does not exist.*INFRA_OBSERVER_ECS_QUEUE_URL"):
        await missing.check()


async def _counts_are(harness: Harness, url_key: str, expected: tuple[int, int]) -> bool:
    return await harness.counts(url_key) == expected


@pytest.fixture(scope="module")
def moto_enforcing_iam() -> Iterator[MotoPeer]:
    """A moto of its own: it will check every request against IAM, unlike the shared one."""
    peer = MotoPeer().start()
    yield peer
    peer.stop()


def iam_user(moto: MotoPeer, name: str, actions: list[str]) -> tuple[str, str]:
    iam = moto.client("iam")
    iam.create_user(UserName=name)
    if actions:
        statement = {"Effect": "Allow", "Action": actions, "Resource": "*"}
        document = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
        iam.put_user_policy(UserName=name, PolicyName="observer", PolicyDocument=document)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


async def test_permission_errors_name_the_missing_iam_action(
    moto_enforcing_iam: MotoPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    moto = moto_enforcing_iam
    sqs_only = iam_user(moto, "sqs-only", ["sqs:*"])
    nothing = iam_user(moto, "nothing", [])
    name = f"ecs-{uuid.uuid4().hex[:10]}"
    harness = Harness(
        moto=moto, queue=moto.create_queue(name, dlq=True, max_receive_count=1000), name=name
    )
    task = await harness.run_task(flow_run_tags())
    await harness.send(task, last_status="RUNNING")
    # From here on every request must be signed by a user whose policy allows it.
    reset = f"{moto.endpoint_url}/moto-api/reset-auth"
    (await asyncio.to_thread(httpx.post, reset, content=b"0")).raise_for_status()

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", nothing[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", nothing[1])
    emitter = Emitter(sink=ListSink(), settings=EMITTER, metrics=harness.metrics)
    denied = EcsSource(settings=harness.settings(), handoff=emitter, metrics=harness.metrics)
    with pytest.raises(SourceError, match="sqs:GetQueueAttributes was denied"):
        await denied.check()

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", sqs_only[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", sqs_only[1])
    harness.metrics = Metrics(CollectorRegistry())
    sink = ListSink()
    with capture_logs() as logs:
        async with running(harness, sink):

            async def refused() -> bool:
                return harness.sample("infra_observer_ecs_tag_reads_total", result="error") >= 1

            await eventually(refused, "a refused DescribeTasks")
            held = sum(await asyncio.to_thread(_counts_as, moto, sqs_only, harness.queue["url"]))

    assert held == 1, "the message must stay in the queue"
    assert sink.events == []
    unreadable = next(log for log in logs if log["event"] == "ecs_tags_unreadable")
    assert unreadable["missing_permission"] == "ecs:DescribeTasks"
    assert "ecs:DescribeTasks was denied" in unreadable["error"]


def _counts_as(moto: MotoPeer, user: tuple[str, str], queue_url: str) -> tuple[int, int]:
    sqs = boto3.client(
        "sqs",
        endpoint_url=moto.endpoint_url,
        region_name=moto.region,
        aws_access_key_id=user[0],
        aws_secret_access_key=user[1],
    )
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


async def test_a_burst_of_many_tasks_is_delivered_once_each_and_chained_per_task(
    harness: Harness,
) -> None:
    at = timeline()
    tasks = [await harness.run_task(flow_run_tags()) for _ in range(8)]
    statuses = ["PROVISIONING", "PENDING", "RUNNING", "STOPPED"]
    sent: dict[str, list[str]] = {task["taskArn"]: [] for task in tasks}
    for version, status in enumerate(statuses, start=1):
        for task in tasks:
            envelope = await harness.send(
                task, last_status=status, version=version, time=at(version)
            )
            sent[task["taskArn"]].append(envelope["id"])
    sink = ListSink()
    most_in_flight = 0
    async with running(harness, sink, concurrency=4):

        async def drained() -> bool:
            nonlocal most_in_flight
            in_flight = harness.sample("infra_observer_ecs_messages_in_flight")
            most_in_flight = max(most_in_flight, int(in_flight))
            return await queue_drained(harness)

        await eventually(drained, "every message deleted")

    assert len(sink.events) == len(tasks) * len(statuses)
    assert len({event.id for event in sink.events}) == len(sink.events)
    assert most_in_flight <= 4
    for task_arn, ids in sent.items():
        events = [e for e in sink.events if e.resource["ecs.taskArn"] == task_arn]
        assert [str(e.id) for e in events] == ids, "one task's events in its own order"
        assert [e.follows for e in events] == [None, *(e.id for e in events[:-1])]


async def test_a_stopped_task_carries_its_diagnosis_and_odd_fields_are_reported(
    harness: Harness,
) -> None:
    oom = await harness.run_task(flow_run_tags())
    odd = await harness.run_task(flow_run_tags())
    container = {"name": "prefect", "exitCode": 137, "reason": "OutOfMemoryError: Container killed"}
    stopped = await harness.send(
        oom,
        last_status="STOPPED",
        detail={"stopCode": "EssentialContainerExited", "containers": [container]},
    )
    unreadable = await harness.send(odd, last_status="STOPPED", detail={"stopCode": 7})
    sink = ListSink()
    with capture_logs() as logs:
        async with running(harness, sink):
            await eventually(lambda: queue_drained(harness), "both messages deleted")

    by_id = {str(event.id): event for event in sink.events}
    assert by_id[stopped["id"]].resource["ecs.diagnosis"] == "OutOfMemoryError"
    # The odd stop code is left out of the diagnosis; the change itself is delivered.
    assert "ecs.diagnosis" not in by_id[unreadable["id"]].resource
    reports = input_errors(logs, kind="detail")
    assert [log["detail"] for log in reports] == ["detail.stopCode is 7, not a string"]
    assert [log["task_arn"] for log in reports] == [odd["taskArn"]]
    assert harness.sample("infra_observer_input_errors_total", source="ecs", kind="detail") == 1
