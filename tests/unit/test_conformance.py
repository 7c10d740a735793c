"""`check_against_catalog`: events that conform, and each way an event can deviate."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from infra_observer.events import catalog
from infra_observer.events.conformance import (
    CATALOG,
    FamilySpec,
    check_against_catalog,
    find_family,
)
from infra_observer.events.model import Event
from infra_observer.events.related import FlowRunRefs
from infra_observer.sources.docker.catalog import docker_container_event
from infra_observer.sources.ecs.catalog import ecs_task_event
from infra_observer.sources.kubernetes.catalog import PodPhase, kubernetes_pod_event

OCCURRED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVENT_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
FLOW_RUN = "11111111-1111-4111-8111-111111111111"
DEPLOYMENT = "22222222-2222-4222-8222-222222222222"
REFS = FlowRunRefs(flow_run_id=FLOW_RUN, deployment_id=DEPLOYMENT, worker_name="w1")


def pod(phase: PodPhase = "running", refs: FlowRunRefs = REFS) -> Event:
    return kubernetes_pod_event(
        phase=phase,
        pod_uid="a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        pod_name="p",
        namespace="ns",
        refs=refs,
        occurred=OCCURRED,
        event_id=EVENT_ID,
        eviction_reason="Evicted" if phase == "evicted" else None,
    )


def container() -> Event:
    return docker_container_event(
        status="exited",
        container_id="abc123",
        container_name="c",
        refs=REFS,
        worker_name="w1",
        occurred=OCCURRED,
        event_id=EVENT_ID,
    )


def task() -> Event:
    return ecs_task_event(
        status="stopped",
        task_arn="arn:aws:ecs:us-east-1:1:task/c/0123abcd",
        cluster_arn=None,
        task_definition_arn=None,
        refs=REFS,
        occurred=OCCURRED,
        event_id=EVENT_ID,
    )


def transfer() -> Event:
    return catalog.workspace_transfer(
        catalog.Transfer(
            transfer_id=uuid.uuid4(),
            description="local → cloud/ws",
            source_profile="local",
            target_profile="cloud",
            source_url="http://127.0.0.1:4200/api",
            target_url="https://api.prefect.cloud/api",
            total_resources=3,
        ),
        completed=catalog.TransferCounts(succeeded=3, failed=0, skipped=0),
        occurred=OCCURRED,
        event_id=EVENT_ID,
    )


def pull_step() -> Event:
    return catalog.pull_step(
        outcome="failed",
        flow_run_id=uuid.UUID(FLOW_RUN),
        deployment_id=None,
        step={"prefect.deployments.steps.run_shell_script": {"script": "echo hi", "id": "s"}},
        occurred=OCCURRED,
        event_id=EVENT_ID,
    )


def block() -> Event:
    return catalog.block_loaded(
        block_type_slug="s3-bucket",
        block_document_id=uuid.uuid4(),
        block_document_name="b",
        occurred=OCCURRED,
        event_id=EVENT_ID,
    )


def with_resource(event: Event, **changes: str | None) -> Event:
    labels = {**event.resource, **{key.replace("_", "."): v for key, v in changes.items()}}
    return dataclasses.replace(event, resource={k: v for k, v in labels.items() if v is not None})


def with_related(event: Event, role: str, **changes: str | None) -> Event:
    related = []
    for labels in event.related:
        merged = dict(labels)
        if labels["prefect.resource.role"] == role:
            merged |= {key.replace("_", "."): v for key, v in changes.items()}
        related.append({k: v for k, v in merged.items() if v is not None})
    return dataclasses.replace(event, related=tuple(related))


def with_payload(event: Event, **changes: Any) -> Event:
    payload = {**event.payload, **changes}
    return dataclasses.replace(event, payload={k: v for k, v in payload.items() if v is not ...})


CONFORMING: list[Callable[[], Event]] = [
    pod,
    lambda: pod("evicted"),
    container,
    task,
    transfer,
    pull_step,
    block,
]


@pytest.mark.parametrize("build", CONFORMING)
def test_events_of_the_builders_conform(build: Callable[[], Event]) -> None:
    assert check_against_catalog(build()) == []


DEVIATIONS: list[tuple[str, Callable[[], Event], str]] = [
    (
        "unknown name",
        lambda: dataclasses.replace(pod(), event="prefect.kubernetes.pod.exploded"),
        "not in the infrastructure events catalog",
    ),
    (
        "block type that is not a slug",
        lambda: dataclasses.replace(block(), event="prefect.block.S3 Bucket.loaded"),
        "not in the infrastructure events catalog",
    ),
    (
        "resource id of another family",
        lambda: with_resource(pod(), **{"prefect.resource.id": "prefect.ecs.task.x"}),
        "does not match prefect.kubernetes.pod.{uid}",
    ),
    (
        "missing required label",
        lambda: with_resource(pod(), kubernetes_namespace=None),
        "'kubernetes.namespace' is missing",
    ),
    (
        "eviction reason on a running pod",
        lambda: with_resource(pod(), kubernetes_reason="Evicted"),
        "only for evicted, not running",
    ),
    (
        "evicted pod without its reason",
        lambda: with_resource(pod("evicted"), kubernetes_reason=None),
        "'kubernetes.reason' is missing",
    ),
    (
        "undocumented resource label",
        lambda: with_resource(task(), **{"ecs.group": "family:x"}),
        "'ecs.group' is not documented",
    ),
    (
        "name label on an ECS task",
        lambda: with_resource(task(), **{"prefect.resource.name": "t"}),
        "'prefect.resource.name' is not documented",
    ),
    (
        "missing Always related resource",
        lambda: pod(refs=FlowRunRefs()),
        "role 'flow-run' is missing",
    ),
    (
        "missing Docker worker",
        lambda: dataclasses.replace(container(), related=container().related[:-1]),
        "role 'worker' is missing",
    ),
    (
        "undocumented role",
        lambda: with_related(pod(), "deployment", prefect_resource_role="team"),
        "role 'team', not documented",
    ),
    (
        "role twice",
        lambda: dataclasses.replace(pod(), related=(*pod().related, pod().related[0])),
        "role 'flow-run' appears more than once",
    ),
    (
        "related id not matching its pattern",
        lambda: with_related(pod(), "deployment", prefect_resource_id="prefect.deployment.x"),
        "does not match prefect.deployment.{uuid}",
    ),
    (
        "worker of the wrong type",
        lambda: with_related(task(), "worker", **{"prefect.worker-type": "kubernetes"}),
        "expected 'ecs'",
    ),
    (
        "worker without its type",
        lambda: with_related(container(), "worker", **{"prefect.worker-type": None}),
        "'prefect.worker-type' is None",
    ),
    (
        "undocumented related label",
        lambda: with_related(pod(), "flow-run", **{"prefect.resource.owner": "x"}),
        "label 'prefect.resource.owner' is not documented",
    ),
    (
        "payload where the page has none",
        lambda: with_payload(container(), exit_code=3),
        "payload must be empty",
    ),
    (
        "missing payload field",
        lambda: with_payload(transfer(), skipped=...),
        "'skipped' is missing",
    ),
    (
        "string for an integer",
        lambda: with_payload(transfer(), total_resources="3"),
        "'total_resources' is string, expected integer",
    ),
    (
        "boolean for an integer",
        lambda: with_payload(transfer(), failed=False),
        "'failed' is boolean, expected integer",
    ),
    (
        "undocumented payload field",
        lambda: with_payload(transfer(), duration=1.5),
        "'duration' is not documented",
    ),
    (
        "pull step as written in prefect.yaml, not serialized",
        lambda: dataclasses.replace(pull_step(), payload={"a.b.c": {"x": 1}}),
        "'qualified_name' is missing",
    ),
    (
        "pull step whose name does not end its qualified name",
        lambda: with_payload(pull_step(), step_name="git_clone"),
        "'step_name' is not the last part",
    ),
    (
        "pull step inputs that are not an object",
        lambda: with_payload(pull_step(), inputs=["x"]),
        "'inputs' is array, expected object",
    ),
]


@pytest.mark.parametrize(
    ("build", "expected"),
    [(build, expected) for _, build, expected in DEVIATIONS],
    ids=[case for case, _, _ in DEVIATIONS],
)
def test_each_deviation_is_reported(build: Callable[[], Event], expected: str) -> None:
    problems = check_against_catalog(build())
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize("spec", CATALOG, ids=lambda spec: spec.name)
def test_every_concrete_name_finds_its_family(spec: FamilySpec) -> None:
    for pattern in spec.names:
        found = find_family(pattern.replace("{type}", "slack-webhook"))
        assert found is not None
        assert found[0] is spec
