"""Where an ECS task's flow-run container logs, from its task definition."""

from __future__ import annotations

from typing import Any

import pytest

from infra_observer.errors import InputError
from infra_observer.sources.ecs.crash_logs import LogLocation, awslogs_location

TASK_ARN = "arn:aws:ecs:eu-west-1:111122223333:task/prefect/0f3e7a51a3c94d8f"


def container(name: str, **options: str) -> dict[str, Any]:
    return {"name": name, "logConfiguration": {"logDriver": "awslogs", "options": options}}


AWSLOGS = {"awslogs-group": "/prefect/flows", "awslogs-stream-prefix": "runs"}


def test_the_prefect_container_stream_is_prefix_container_task_id() -> None:
    definition = {
        "containerDefinitions": [
            container("sidecar", **AWSLOGS),
            container("prefect", **AWSLOGS, **{"awslogs-region": "eu-central-1"}),
        ]
    }
    assert awslogs_location(definition, task_arn=TASK_ARN) == LogLocation(
        group="/prefect/flows", stream="runs/prefect/0f3e7a51a3c94d8f", region="eu-central-1"
    )


def test_a_single_container_is_the_flow_container_whatever_its_name() -> None:
    definition = {"containerDefinitions": [container("flow", **AWSLOGS)]}
    location = awslogs_location(definition, task_arn=TASK_ARN)
    assert (location.stream, location.region) == ("runs/flow/0f3e7a51a3c94d8f", None)


@pytest.mark.parametrize(
    ("definition", "says"),
    [
        ({"containerDefinitions": []}, "0 containers and none named 'prefect'"),
        ({"containerDefinitions": [container("a"), container("b")]}, "2 containers"),
        ({"containerDefinitions": [{"name": "prefect"}]}, "awslogs driver"),
        (
            {
                "containerDefinitions": [
                    {"name": "prefect", "logConfiguration": {"logDriver": "json-file"}}
                ]
            },
            "awslogs driver",
        ),
        (
            {"containerDefinitions": [container("prefect", **{"awslogs-stream-prefix": "x"})]},
            "awslogs-group",
        ),
        (
            {"containerDefinitions": [container("prefect", **{"awslogs-group": "g"})]},
            "awslogs-stream-prefix",
        ),
    ],
)
def test_logs_that_cannot_be_found_say_why(definition: dict[str, Any], says: str) -> None:
    with pytest.raises(InputError, match=says):
        awslogs_location(definition, task_arn=TASK_ARN)
