"""Reading an ECS task's tags with `ecs:DescribeTasks`: they are not in the state change."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from infra_observer.sources.ecs.advice import error_code, explain, missing_permission
from infra_observer.sources.ecs.metrics import EcsMetrics
from infra_observer.sources.ecs.translate import TaskStateChange

log = structlog.get_logger(__name__)

_TASK_ARN_CLUSTER = re.compile(r":task/([^/]+)/[^/]+$")


async def read_tags(
    ecs: Any, change: TaskStateChange, *, metrics: EcsMetrics, queue_url: str | None
) -> dict[str, str] | None:
    """The task's tags; None when they cannot be read now (logged and counted: retry later)."""
    cluster = change.cluster_arn or cluster_of(change.task_arn)
    try:
        response = await ecs.describe_tasks(
            cluster=cluster, tasks=[change.task_arn], include=["TAGS"]
        )
    except (ClientError, BotoCoreError) as exc:
        metrics.tag_reads.labels("error").inc()
        log.warning(
            "ecs_tags_unreadable",
            task_arn=change.task_arn,
            reason=error_code(exc),
            error=explain(exc, queue_url=queue_url),
            missing_permission=missing_permission(exc),
            action="retry_later",
        )
        return None
    task = _matching_task(response.get("tasks") or [], change.task_arn)
    if task is None:
        metrics.tag_reads.labels("missing").inc()
        reasons = [f.get("reason") for f in response.get("failures") or []]
        log.warning(
            "ecs_tags_unreadable",
            task_arn=change.task_arn,
            reason="task_not_found",
            failures=reasons,
            action="retry_later",
        )
        return None
    metrics.tag_reads.labels("ok").inc()
    return tags_of(task)


def tags_of(task: Mapping[str, Any]) -> dict[str, str]:
    """The `tags` list of a DescribeTasks task (`[{"key", "value"}]`) as a dict."""
    tags: dict[str, str] = {}
    for tag in task.get("tags") or ():
        key, value = tag.get("key"), tag.get("value")
        if isinstance(key, str):
            tags[key] = value if isinstance(value, str) else ""
    return tags


def cluster_of(task_arn: str) -> str:
    """The cluster a task ARN names."""
    # Old-format ARNs (`task/<id>`) do not name the cluster: ECS then means `default`.
    match = _TASK_ARN_CLUSTER.search(task_arn)
    return match.group(1) if match else "default"


def _matching_task(tasks: Sequence[Mapping[str, Any]], task_arn: str) -> Mapping[str, Any] | None:
    for task in tasks:
        if task.get("taskArn") == task_arn:
            return task
    return None
