"""The AWS clients of the ECS source: region, timeouts, the SQS and ECS clients, and what
the queue reports of itself."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session

from infra_observer.config import EcsSettings
from infra_observer.errors import ConfigError

_QUEUE_URL_REGION = re.compile(r"^https://sqs[.-]([a-z0-9-]+)\.amazonaws\.com(\.cn)?/")


@dataclass(frozen=True, slots=True)
class Clients:
    """The open SQS and ECS clients, and the queue they consume."""

    sqs: Any
    ecs: Any
    queue_url: str


def queue_url(settings: EcsSettings) -> str:
    """The configured queue URL; a `ConfigError` when there is none."""
    if not settings.queue_url:
        raise ConfigError("INFRA_OBSERVER_ECS_QUEUE_URL is required for the ECS source")
    return settings.queue_url


@contextlib.asynccontextmanager
async def open_clients(settings: EcsSettings) -> AsyncIterator[Clients]:
    """Open the SQS and ECS clients for `settings`, and close them on leaving."""
    session = get_session()
    config = AioConfig(
        retries={"mode": "standard"},
        connect_timeout=10,
        # Long polls hold the connection open for up to wait_time_seconds.
        read_timeout=settings.wait_time_seconds + 20,
        max_pool_connections=settings.concurrency * 2 + 2,
    )
    options = {
        "region_name": region(settings, session),
        "endpoint_url": settings.endpoint_url,
        "config": config,
    }
    async with (
        session.create_client("sqs", **options) as sqs,
        session.create_client("ecs", **options) as ecs,
    ):
        yield Clients(sqs=sqs, ecs=ecs, queue_url=queue_url(settings))


def region(settings: EcsSettings, session: AioSession) -> str:
    """The configured region, else the standard chain (env, profile), else the queue URL's."""
    url = queue_url(settings)
    found = settings.region or session.get_config_variable("region")
    if not found:
        match = _QUEUE_URL_REGION.match(url)
        found = match.group(1) if match else None
    if not found:
        raise ConfigError(
            "no AWS region: set INFRA_OBSERVER_ECS_REGION or AWS_REGION (the queue URL "
            f"{url!r} does not name one)"
        )
    return str(found)


async def queue_attributes(clients: Clients) -> dict[str, str]:
    """The queue's ARN, depth and redrive policy, as `check` reports them."""
    response = await clients.sqs.get_queue_attributes(
        QueueUrl=clients.queue_url,
        AttributeNames=["QueueArn", "ApproximateNumberOfMessages", "RedrivePolicy"],
    )
    attributes: dict[str, str] = response.get("Attributes", {})
    return attributes


def describe_queue(queue_url: str, attributes: Mapping[str, str]) -> str:
    """One line saying which queue was reached and what waits in it."""
    dead_letter = "none"
    if "RedrivePolicy" in attributes:
        dead_letter = attributes["RedrivePolicy"]
    return (
        f"queue {attributes.get('QueueArn', queue_url)} reached: "
        f"{attributes.get('ApproximateNumberOfMessages', '?')} messages waiting, "
        f"redrive policy: {dead_letter}"
    )
