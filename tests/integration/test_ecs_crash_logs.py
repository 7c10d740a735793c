"""A crashed ECS task's last log lines, read from CloudWatch Logs (moto)."""

from __future__ import annotations

import time

import pytest
from aiobotocore.session import get_session

from infra_observer.sources.ecs.crash_logs import awslogs_location, read_last_lines
from tests.peers.moto import MotoPeer

GROUP = "/prefect/flows"


@pytest.mark.asyncio
async def test_the_last_lines_of_the_flow_container_stream_oldest_first(moto: MotoPeer) -> None:
    ecs, logs = moto.client("ecs"), moto.client("logs")
    definition = ecs.register_task_definition(
        family="crash-logs",
        networkMode="bridge",
        containerDefinitions=[
            {
                "name": "prefect",
                "image": "prefecthq/prefect:3-latest",
                "memory": 512,
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {"awslogs-group": GROUP, "awslogs-stream-prefix": "runs"},
                },
            }
        ],
    )["taskDefinition"]
    task_arn = f"arn:aws:ecs:{moto.region}:{moto.account_id}:task/prefect/5d1f0c2b9e7a4f60"
    location = awslogs_location(definition, task_arn=task_arn)
    logs.create_log_group(logGroupName=GROUP)
    now = int(time.time() * 1000) - 600
    logs.create_log_stream(logGroupName=GROUP, logStreamName=location.stream)
    logs.put_log_events(
        logGroupName=GROUP,
        logStreamName=location.stream,
        logEvents=[{"timestamp": now + i, "message": f"line {i}"} for i in range(600)],
    )
    async with get_session().create_client(
        "logs",
        endpoint_url=moto.endpoint_url,
        region_name=moto.region,
        aws_access_key_id=moto.access_key_id,
        aws_secret_access_key=moto.secret_access_key,
    ) as client:
        lines = await read_last_lines(client, location, lines=500)
    assert location.stream == "runs/prefect/5d1f0c2b9e7a4f60"
    assert lines == [f"line {i}" for i in range(100, 600)]
