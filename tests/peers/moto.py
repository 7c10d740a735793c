"""moto_server from the project venv, standing in for SQS and ECS.

moto emits no EventBridge events: tests send "ECS Task State Change" envelopes to the
queue themselves with ``send_task_state_change``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from ._util import (
    ManagedProcess,
    OneProcessPeer,
    PeerUnavailableError,
    free_port,
    short_tempdir,
)

log = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"  # moto's default account


def moto_server_binary() -> Path:
    """moto_server next to the running interpreter: the project venv provides it."""
    path = Path(sys.executable).parent / "moto_server"
    if not path.exists():
        raise PeerUnavailableError(
            f"{path} missing: install the project's test dependencies (moto[server]) in the venv"
        )
    return path


class MotoPeer(OneProcessPeer):
    """moto_server on a free loopback port.

    Attributes: ``endpoint_url``, ``region`` ("us-east-1"), ``access_key_id``,
    ``secret_access_key``, ``account_id``; ``env()`` gives matching AWS_* variables.
    """

    region = "us-east-1"
    access_key_id = "testing"
    secret_access_key = "testing"
    account_id = ACCOUNT_ID

    def __init__(self) -> None:
        super().__init__(short_tempdir("io-moto-"))
        self.binary = moto_server_binary()
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment for a process (the daemon under test) that should talk to this moto."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
        }

    def start(self) -> MotoPeer:
        proc = ManagedProcess(
            "moto_server",
            [self.binary, "-H", "127.0.0.1", "-p", str(self.port)],
            log_path=self.state_dir / "moto.log",
            env={**os.environ, **self.env()},
        )

        def ready() -> bool | None:
            response = httpx.get(self.endpoint_url + "/moto-api/", timeout=2)
            return True if response.status_code == 200 else None

        return self._launch(proc, ready=ready, timeout=60)

    def reset(self) -> None:
        """Forget every resource (moto's reset endpoint)."""
        self._post_json("/moto-api/reset", {})

    # ------------------------------------------------------------ clients

    def client(self, service: str) -> Any:
        """A boto3 client for ``service`` pointed at this moto."""
        import boto3  # type: ignore[import-untyped]

        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )

    def _post_json(self, path: str, body: Mapping[str, Any]) -> None:
        httpx.post(self.endpoint_url + path, json=dict(body), timeout=10).raise_for_status()

    # ------------------------------------------------------------ SQS

    def create_queue(
        self,
        name: str,
        *,
        dlq: bool = False,
        max_receive_count: int = 3,
        visibility_timeout: int = 30,
    ) -> dict[str, str]:
        """Create a queue (and a ``<name>-dlq`` with a redrive policy if ``dlq``).

        Returns ``{"url", "arn"}`` plus ``{"dlq_url", "dlq_arn"}`` with a DLQ.
        """
        sqs = self.client("sqs")
        result: dict[str, str] = {}
        attributes = {"VisibilityTimeout": str(visibility_timeout)}
        if dlq:
            dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
            dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
            )
            result.update(dlq_url=dlq_url, dlq_arn=dlq_arn)
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        result.update(url=url, arn=arn)
        return result

    def send_task_state_change(
        self,
        queue_url: str,
        task: Mapping[str, Any] | None = None,
        *,
        task_arn: str | None = None,
        cluster_arn: str | None = None,
        last_status: str = "RUNNING",
        desired_status: str | None = None,
        version: int = 1,
        event_id: str | None = None,
        time: dt.datetime | str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Send an EventBridge "ECS Task State Change" envelope to ``queue_url``.

        ``task`` may be a task from describe_tasks/run_task (its ARNs and containers are
        copied); ``detail`` entries override the built detail. Returns the envelope sent.
        """
        envelope = task_state_change_envelope(
            task,
            task_arn=task_arn,
            cluster_arn=cluster_arn,
            last_status=last_status,
            desired_status=desired_status,
            version=version,
            event_id=event_id,
            time=time,
            detail=detail,
            region=self.region,
            account=self.account_id,
        )
        self.client("sqs").send_message(QueueUrl=queue_url, MessageBody=json.dumps(envelope))
        return envelope

    # ------------------------------------------------------------ ECS

    def run_fargate_task(
        self,
        *,
        cluster: str = "infra-observer",
        family: str = "prefect-flow-run",
        tags: Mapping[str, str] | None = None,
        container_name: str = "prefect",
        started_by: str | None = None,
    ) -> dict[str, Any]:
        """Create the cluster, register a task definition and run one FARGATE task with tags.

        moto's quirks: container-level memory, ``networkMode="bridge"``, no
        ``requiresCompatibilities``. Returns the task as run_task returned it.
        """
        ecs = self.client("ecs")
        ecs.create_cluster(clusterName=cluster)
        task_definition = ecs.register_task_definition(
            family=family,
            networkMode="bridge",
            containerDefinitions=[
                {
                    "name": container_name,
                    "image": "prefecthq/prefect:3-latest",
                    "memory": 512,
                    "cpu": 256,
                    "essential": True,
                }
            ],
        )["taskDefinition"]["taskDefinitionArn"]
        kwargs: dict[str, Any] = {
            "cluster": cluster,
            "taskDefinition": task_definition,
            "launchType": "FARGATE",
            "count": 1,
            "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
        }
        if started_by:
            kwargs["startedBy"] = started_by
        task: dict[str, Any] = ecs.run_task(**kwargs)["tasks"][0]
        return task

    def describe_task(self, cluster: str, task_arn: str) -> dict[str, Any]:
        """describe_tasks with include=["TAGS"] for one task."""
        response = self.client("ecs").describe_tasks(
            cluster=cluster, tasks=[task_arn], include=["TAGS"]
        )
        task: dict[str, Any] = response["tasks"][0]
        return task

    def pin_task_status(self, *, times: int = 1_000_000_000, seconds: int | None = None) -> None:
        """Hold moto's ECS task status where it is.

        By default moto advances a task's status every time it is described. ``times``
        (manual progression) lets it advance only after that many reads; ``seconds``
        advances it on a timer instead. Call before the task is run.
        """
        transition: dict[str, Any] = (
            {"progression": "time", "seconds": seconds}
            if seconds is not None
            else {"progression": "manual", "times": times}
        )
        self._post_json(
            "/moto-api/state-manager/set-transition",
            {"model_name": "ecs::task", "transition": transition},
        )

    def unpin_task_status(self) -> None:
        """Back to moto's default: the status advances on every describe."""
        self._post_json("/moto-api/state-manager/unset-transition", {"model_name": "ecs::task"})


def task_state_change_envelope(
    task: Mapping[str, Any] | None = None,
    *,
    task_arn: str | None = None,
    cluster_arn: str | None = None,
    last_status: str = "RUNNING",
    desired_status: str | None = None,
    version: int = 1,
    event_id: str | None = None,
    time: dt.datetime | str | None = None,
    detail: Mapping[str, Any] | None = None,
    region: str = "us-east-1",
    account: str = ACCOUNT_ID,
) -> dict[str, Any]:
    """The EventBridge envelope of an "ECS Task State Change" (see EVENTS-CONTRACT.md)."""
    task = dict(task or {})
    arn = (
        task_arn
        or task.get("taskArn")
        or (f"arn:aws:ecs:{region}:{account}:task/infra-observer/{uuid.uuid4().hex}")
    )
    cluster = (
        cluster_arn
        or task.get("clusterArn")
        or (f"arn:aws:ecs:{region}:{account}:cluster/infra-observer")
    )
    when_text = _event_time(time or dt.datetime.now(dt.UTC))
    body = _task_detail(
        task,
        arn=arn,
        cluster=cluster,
        last_status=last_status,
        desired_status=desired_status,
        version=version,
        when_text=when_text,
    )
    body.update(detail or {})
    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": account,
        "time": when_text,
        "region": region,
        "resources": [arn],
        "detail": body,
    }


def _event_time(when: dt.datetime | str) -> str:
    """EventBridge's `time`: UTC to the second, with a `Z`."""
    if isinstance(when, str):
        return when
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _task_detail(
    task: Mapping[str, Any],
    *,
    arn: str,
    cluster: str,
    last_status: str,
    desired_status: str | None,
    version: int,
    when_text: str,
) -> dict[str, Any]:
    """The envelope's `detail`: the task as ECS describes it after the change."""
    stopped = last_status in ("STOPPED", "DELETED", "DEPROVISIONING")
    body: dict[str, Any] = {
        "taskArn": arn,
        "clusterArn": cluster,
        "taskDefinitionArn": task.get("taskDefinitionArn", ""),
        "lastStatus": last_status,
        "desiredStatus": desired_status or ("STOPPED" if stopped else "RUNNING"),
        "launchType": task.get("launchType", "FARGATE"),
        "group": task.get("group", "family:prefect-flow-run"),
        "startedBy": task.get("startedBy", ""),
        "containers": [
            {
                "containerArn": c.get("containerArn", ""),
                "name": c.get("name", ""),
                "lastStatus": last_status,
                "taskArn": arn,
                **({"exitCode": 0} if stopped else {}),
            }
            for c in task.get("containers", [])
        ],
        "createdAt": when_text,
        "version": version,
        "updatedAt": when_text,
    }
    if last_status in ("RUNNING", "DEACTIVATING", "STOPPING", "STOPPED"):
        body["startedAt"] = when_text
    if stopped:
        body.update(
            stoppedAt=when_text,
            stopCode="EssentialContainerExited",
            stoppedReason="Essential container in task exited",
        )
    return body


def parse_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Decode the JSON bodies of SQS messages from receive_message."""
    return [json.loads(m["Body"]) for m in messages]
