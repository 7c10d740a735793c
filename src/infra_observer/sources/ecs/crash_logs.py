"""Where an ECS task's flow-run container wrote its logs (the `awslogs` driver), and their
last lines, read from CloudWatch Logs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from infra_observer.config import EcsSettings
from infra_observer.errors import InputError, SourceError
from infra_observer.sources.ecs.advice import explain
from infra_observer.sources.ecs.lifecycle import PREFECT_CONTAINER

GET_LOG_EVENTS_LIMIT: Final = 10_000
"""The most events one GetLogEvents call returns."""


@dataclass(frozen=True, slots=True)
class LogLocation:
    group: str
    stream: str
    region: str | None
    """The `awslogs-region` option; None: the region of the task's cluster."""


def awslogs_location(task_definition: Mapping[str, Any], *, task_arn: str) -> LogLocation:
    """The log group and stream of the task's `prefect` container (its only container when
    none is named so); raises `InputError` saying why the logs cannot be found."""
    container = _flow_container(task_definition)
    name = container.get("name")
    settings = container.get("logConfiguration") or {}
    if not isinstance(settings, Mapping) or settings.get("logDriver") != "awslogs":
        raise InputError(f"container {name!r} does not log with the awslogs driver")
    options = settings.get("options") or {}
    group, prefix = options.get("awslogs-group"), options.get("awslogs-stream-prefix")
    if not isinstance(group, str) or not group:
        raise InputError(f"container {name!r} has no awslogs-group option")
    if not isinstance(prefix, str) or not prefix:
        # Without a prefix the stream is named after the container's Docker id, which the
        # task state change does not carry.
        raise InputError(f"container {name!r} has no awslogs-stream-prefix option")
    region = options.get("awslogs-region")
    task_id = task_arn.rsplit("/", 1)[-1]
    return LogLocation(
        group=group,
        stream=f"{prefix}/{name}/{task_id}",
        region=region if isinstance(region, str) and region else None,
    )


def _flow_container(task_definition: Mapping[str, Any]) -> Mapping[str, Any]:
    containers = [
        c for c in task_definition.get("containerDefinitions") or () if isinstance(c, Mapping)
    ]
    named = [c for c in containers if c.get("name") == PREFECT_CONTAINER]
    if named:
        return named[0]
    if len(containers) == 1:
        return containers[0]
    raise InputError(
        f"the task definition has {len(containers)} containers and none named {PREFECT_CONTAINER!r}"
    )


async def read_last_lines(logs: Any, location: LogLocation, *, lines: int) -> list[str]:
    """The stream's last `lines` messages, oldest first, through a CloudWatch Logs client."""
    answer = await logs.get_log_events(
        logGroupName=location.group,
        logStreamName=location.stream,
        limit=min(lines, GET_LOG_EVENTS_LIMIT),
        startFromHead=False,
    )
    return [str(event.get("message", "")) for event in answer.get("events", ())][-lines:]


async def read_crash_logs(
    ecs: Any, *, settings: EcsSettings, task_definition_arn: str | None, task_arn: str, lines: int
) -> list[str]:
    """The last `lines` lines of the task's flow container, through the source's ECS client
    (for the task definition) and a CloudWatch Logs client opened for the read."""
    if task_definition_arn is None:
        raise InputError("the task state change names no task definition")
    try:
        answer = await ecs.describe_task_definition(taskDefinition=task_definition_arn)
        location = awslogs_location(answer["taskDefinition"], task_arn=task_arn)
        async with get_session().create_client(
            "logs",
            region_name=location.region or ecs.meta.region_name,
            endpoint_url=settings.endpoint_url,
        ) as logs:
            return await read_last_lines(logs, location, lines=lines)
    except (ClientError, BotoCoreError) as exc:
        raise SourceError(f"cannot read the task's logs: {explain(exc, queue_url=None)}") from exc
