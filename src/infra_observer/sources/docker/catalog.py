"""Builders for the Docker source's events: `prefect.docker.container.{status}` and
`prefect.docker.container.creation-failed`.

Each builder takes typed inputs and returns an `Event` whose resource labels and related
resources match the container part of the reference page; the Docker source and
`infra-observer emit` build container events only here.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal, get_args

from infra_observer.events.model import Event, resource_labels, utc
from infra_observer.events.related import (
    FlowRunRefs,
    deployment_related,
    flow_related,
    flow_run_related,
    present,
    shared_worker,
    work_pool_related,
)

ContainerStatus = Literal[
    "created", "running", "paused", "restarting", "removing", "exited", "dead"
]

CONTAINER_STATUSES: tuple[ContainerStatus, ...] = get_args(ContainerStatus)


def docker_container_event(
    *,
    status: ContainerStatus,
    container_id: str,
    container_name: str | None,
    refs: FlowRunRefs,
    worker_name: str,
    occurred: datetime,
    event_id: uuid.UUID,
) -> Event:
    """`prefect.docker.container.{status}`."""
    return _docker_event(
        name=f"prefect.docker.container.{status}",
        container_id=container_id,
        container_name=container_name,
        refs=refs,
        worker_name=worker_name,
        occurred=occurred,
        event_id=event_id,
    )


def docker_container_creation_failed(
    *,
    container_id: str,
    container_name: str | None,
    refs: FlowRunRefs,
    worker_name: str,
    occurred: datetime,
    event_id: uuid.UUID,
) -> Event:
    """`prefect.docker.container.creation-failed`: no daemon reports it, so a worker emits it.

    `container_id` is whatever identifies the attempt, for instance the intended name.
    """
    return _docker_event(
        name="prefect.docker.container.creation-failed",
        container_id=container_id,
        container_name=container_name,
        refs=refs,
        worker_name=worker_name,
        occurred=occurred,
        event_id=event_id,
    )


def _docker_event(
    *,
    name: str,
    container_id: str,
    container_name: str | None,
    refs: FlowRunRefs,
    worker_name: str,
    occurred: datetime,
    event_id: uuid.UUID,
) -> Event:
    # The page makes the worker always present: the container's own worker label wins,
    # else the configured name of the watching worker.
    worker = shared_worker("docker", refs.worker_name or worker_name)
    # The page makes the name label unconditional: a container whose name is unknown is
    # named by its id.
    return Event(
        occurred=utc(occurred),
        event=name,
        resource=resource_labels(
            f"prefect.docker.container.{container_id}", name=container_name or container_id
        ),
        related=(
            *present(
                flow_run_related(refs),
                flow_related(refs),
                deployment_related(refs),
                work_pool_related(refs),
            ),
            worker,
        ),
        id=event_id,
    )
