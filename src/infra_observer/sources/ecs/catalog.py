"""Builders for the ECS source's events: `prefect.ecs.task.{status}`.

Each builder takes typed inputs and returns an `Event` whose resource labels and related
resources match the task part of the reference page; the ECS source builds its events only
here.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal, get_args

from infra_observer.events.model import Event, resource_labels, utc
from infra_observer.events.related import FlowRunRefs, labelled_related

EcsTaskStatus = Literal[
    "provisioning",
    "pending",
    "activating",
    "running",
    "deactivating",
    "stopping",
    "deprovisioning",
    "stopped",
    "deleted",
]

ECS_TASK_STATUSES: tuple[EcsTaskStatus, ...] = get_args(EcsTaskStatus)


def ecs_task_id(task_arn: str) -> str:
    """The task id is the ARN's last path segment (`.../cluster/<id>` or `.../<id>`)."""
    return task_arn.rsplit("/", 1)[-1]


def ecs_task_event(
    *,
    status: EcsTaskStatus,
    task_arn: str,
    cluster_arn: str | None,
    task_definition_arn: str | None,
    refs: FlowRunRefs,
    occurred: datetime,
    event_id: uuid.UUID,
    diagnosis: str | None = None,
) -> Event:
    """`prefect.ecs.task.{status}`; `diagnosis` is the category of what went wrong, if any."""
    extra = {"ecs.taskArn": task_arn}
    if cluster_arn:
        extra["ecs.clusterArn"] = cluster_arn
    if task_definition_arn:
        extra["ecs.taskDefinitionArn"] = task_definition_arn
    if diagnosis:
        extra["ecs.diagnosis"] = diagnosis
    return Event(
        occurred=utc(occurred),
        event=f"prefect.ecs.task.{status}",
        resource=resource_labels(f"prefect.ecs.task.{ecs_task_id(task_arn)}", **extra),
        related=labelled_related(refs, "ecs"),
        id=event_id,
    )
