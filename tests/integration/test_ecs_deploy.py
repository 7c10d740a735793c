"""deploy/aws/ecs-task-events.yaml deployed into moto, then fed through EventBridge.

moto runs the CloudFormation template, routes PutEvents through the rule to the queue, and
serves the queue to the ECS source: the path a real account takes, end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from infra_observer.config import EcsSettings, EmitterSettings
from infra_observer.emitter import Emitter
from infra_observer.metrics import Metrics
from infra_observer.sources.ecs.advice import IAM_ACTIONS
from infra_observer.sources.ecs.source import EcsSource
from tests.integration.ecs_support import ListSink, eventually
from tests.peers.moto import MotoPeer, task_state_change_envelope

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "aws" / "ecs-task-events.yaml"
EMITTER = EmitterSettings(flush_interval_seconds=0.05, retry_max_seconds=0.5)


def deploy(moto: MotoPeer, name: str, **parameters: str) -> dict[str, str]:
    cloudformation = moto.client("cloudformation")
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=TEMPLATE.read_text(),
        Parameters=[
            {"ParameterKey": "QueueName", "ParameterValue": name},
            *({"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()),
        ],
        Capabilities=["CAPABILITY_IAM"],
    )
    stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    return {output["OutputKey"]: output["OutputValue"] for output in stack["Outputs"]}


def policy_document(moto: MotoPeer, policy_arn: str) -> dict[str, Any]:
    iam = moto.client("iam")
    version = iam.get_policy(PolicyArn=policy_arn)["Policy"]["DefaultVersionId"]
    document: dict[str, Any] = iam.get_policy_version(PolicyArn=policy_arn, VersionId=version)[
        "PolicyVersion"
    ]["Document"]
    return document


def put_task_change(moto: MotoPeer, task: dict[str, Any], status: str) -> str:
    detail = task_state_change_envelope(task, last_status=status)["detail"]
    entry = {
        "Source": "aws.ecs",
        "DetailType": "ECS Task State Change",
        "Detail": json.dumps(detail),
    }
    response = moto.client("events").put_events(Entries=[entry])
    assert response["FailedEntryCount"] == 0
    return str(response["Entries"][0]["EventId"])


def test_the_template_passes_cfn_lint() -> None:
    # cfn-lint comes with moto[server] (moto validates templates with it).
    from cfnlint.api import lint_file

    assert [str(match) for match in lint_file(TEMPLATE)] == []


def test_the_policy_grants_exactly_what_the_source_calls(moto: MotoPeer) -> None:
    name = f"io-policy-{uuid.uuid4().hex[:8]}"
    outputs = deploy(moto, name)

    statements = policy_document(moto, outputs["DaemonPolicyArn"])["Statement"]
    granted = set()
    for statement in statements:
        actions = statement["Action"]
        granted |= {actions} if isinstance(actions, str) else set(actions)
        assert "Condition" not in statement  # every cluster when none is named
    assert granted == IAM_ACTIONS
    rule = moto.client("events").describe_rule(Name=outputs["RuleArn"].rsplit("/", 1)[-1])
    assert json.loads(rule["EventPattern"]) == {
        "source": ["aws.ecs"],
        "detail-type": ["ECS Task State Change"],
    }


async def test_events_of_the_chosen_clusters_reach_the_source(
    moto: MotoPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto.secret_access_key)
    name = f"io-stack-{uuid.uuid4().hex[:8]}"
    tags = {"prefect.io/flow-run-id": str(uuid.uuid4())}
    watched = await asyncio.to_thread(moto.run_fargate_task, cluster=f"{name}-a", tags=tags)
    ignored = await asyncio.to_thread(moto.run_fargate_task, cluster=f"{name}-b", tags=tags)
    iam = moto.client("iam")
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps({"Statement": []}))
    outputs = await asyncio.to_thread(
        deploy, moto, name, ClusterArns=watched["clusterArn"], DaemonRoleNames=name
    )

    attached = iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
    assert [policy["PolicyArn"] for policy in attached] == [outputs["DaemonPolicyArn"]]
    statements = policy_document(moto, outputs["DaemonPolicyArn"])["Statement"]
    describe = next(s for s in statements if s["Action"] == "ecs:DescribeTasks")
    assert describe["Condition"] == {"ArnEquals": {"ecs:cluster": [watched["clusterArn"]]}}

    event_ids = [put_task_change(moto, task, "RUNNING") for task in (watched, ignored)]
    metrics = Metrics(CollectorRegistry())
    sink = ListSink()
    emitter = Emitter(sink=sink, settings=EMITTER, metrics=metrics)
    settings = EcsSettings(
        enabled=True,
        queue_url=outputs["QueueUrl"],
        region=moto.region,
        endpoint_url=moto.endpoint_url,
        wait_time_seconds=1,
    )
    source = EcsSource(settings=settings, handoff=emitter, metrics=metrics)
    emitter_task = asyncio.create_task(emitter.run())
    source_task = asyncio.create_task(source.run())
    try:

        async def delivered() -> bool:
            return len(sink.events) >= 1

        await eventually(delivered, "the watched task's event")
    finally:
        source_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await source_task
        emitter.stop(5)
        await emitter_task

    assert [str(event.id) for event in sink.events] == [event_ids[0]]
    assert sink.events[0].resource["ecs.taskArn"] == watched["taskArn"]
