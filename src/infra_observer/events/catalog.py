"""Builders for every event of the infrastructure events reference page.

Each builder takes typed inputs and returns an `Event` whose resource labels, related
resources and payload match the page's tables; sources and the CLI build events only here.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple, get_args

from infra_observer.events.model import RESOURCE_ID, RESOURCE_NAME, RESOURCE_ROLE, Event, utc

PodPhase = Literal["pending", "running", "succeeded", "failed", "unknown", "evicted"]
ContainerStatus = Literal[
    "created", "running", "paused", "restarting", "removing", "exited", "dead"
]
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
WorkerType = Literal["kubernetes", "docker", "ecs"]

POD_PHASES: tuple[PodPhase, ...] = get_args(PodPhase)
CONTAINER_STATUSES: tuple[ContainerStatus, ...] = get_args(ContainerStatus)
ECS_TASK_STATUSES: tuple[EcsTaskStatus, ...] = get_args(EcsTaskStatus)

_SLUG_INVALID = re.compile(r"[^a-z0-9]+")
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}")


@functools.lru_cache(maxsize=1024)
def slugify(text: str) -> str:
    """Lower-case ASCII words joined by dashes, as Prefect writes slugs (accents dropped).

    A name with no ASCII letter or digit at all gets a stable hash, never an empty slug.
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = _SLUG_INVALID.sub("-", ascii_text.lower()).strip("-")
    return slug or f"x{hashlib.sha256(text.encode()).hexdigest()[:16]}"


class FlowRunRefs(NamedTuple):
    """The Prefect objects a piece of infrastructure was started for; ids are UUID strings.

    A named tuple, not a frozen dataclass: built for every event, and a frozen dataclass
    spends five times as long setting its fields.
    """

    flow_run_id: str | None = None
    flow_run_name: str | None = None
    deployment_id: str | None = None
    deployment_name: str | None = None
    flow_id: str | None = None
    flow_name: str | None = None
    work_pool_id: str | None = None
    work_pool_name: str | None = None
    worker_name: str | None = None


# Per field of `FlowRunRefs`, in order: (label key, Kubernetes label, Docker label, is a
# UUID); the key is the field's name spelled with dashes (`flow_run_id`: `flow-run-id`).
_REF_LABELS = tuple(
    (key, f"prefect.io/{key}", f"io.prefect.{key}", key.endswith("-id"))
    for key in (field.replace("_", "-") for field in FlowRunRefs._fields)
)


def refs_from_labels(labels: Mapping[str, str]) -> tuple[FlowRunRefs, list[str]]:
    """Read Prefect's labels or tags (`prefect.io/x`, or Docker's reverse-DNS `io.prefect.x`).

    Returns the references and a list of problems: an id that is not a UUID is left out
    (and reported), so the event is still emitted without that related resource.
    """
    values: list[str | None] = []
    problems: list[str] = []
    for key, kube_key, docker_key, is_id in _REF_LABELS:
        value = labels.get(kube_key) or labels.get(docker_key)
        if value and is_id:
            canonical = _canonical_uuid(value)
            if canonical is None:
                problems.append(f"label prefect.io/{key}={value!r} is not a UUID")
            value = canonical
        values.append(value or None)
    # Positional: building a named tuple from keywords costs three times as much.
    return FlowRunRefs._make(values), problems


# The same few ids recur (a flow run's pod changes several times; its deployment, flow
# and work pool are shared by many pods): a hit costs one dictionary lookup.
@functools.lru_cache(maxsize=1024)
def _canonical_uuid(value: str) -> str | None:
    """Prefect's spelling of a UUID (lower case, dashes), or None when it is not one."""
    if _CANONICAL_UUID.fullmatch(value):
        return value  # the usual spelling, without building a UUID
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _resource(resource_id: str, *, name: str | None = None, **extra: str) -> dict[str, str]:
    labels = {RESOURCE_ID: resource_id}
    if name:
        labels[RESOURCE_NAME] = name
    labels.update(extra)
    return labels


def _related(resource_id: str, role: str, name: str | None = None) -> dict[str, str]:
    labels = {RESOURCE_ID: resource_id, RESOURCE_ROLE: role}
    if name:
        labels[RESOURCE_NAME] = name
    return labels


def worker_resource(*, worker_type: WorkerType, worker_name: str) -> dict[str, str]:
    labels = _related(f"prefect.worker.{worker_type}.{slugify(worker_name)}", "worker", worker_name)
    labels["prefect.worker-type"] = worker_type
    return labels


# A deployment, flow, work pool or worker is the same related resource for every flow run
# it has: built once and shared (never mutated: `Event` exposes them as read-only
# Mappings). A flow run's own is built each time: it recurs for a few events of its pod
# or task, usually too far apart for a bounded cache to still hold it.
@functools.lru_cache(maxsize=1024)
def _shared_related(kind: str, ref_id: str, name: str | None) -> dict[str, str]:
    return _related(f"prefect.{kind}.{ref_id}", kind, name)


@functools.lru_cache(maxsize=256)
def _shared_worker(worker_type: WorkerType, worker_name: str) -> dict[str, str]:
    return worker_resource(worker_type=worker_type, worker_name=worker_name)


def _flow_run_related(refs: FlowRunRefs) -> dict[str, str] | None:
    if refs.flow_run_id is None:
        return None
    return _related(f"prefect.flow-run.{refs.flow_run_id}", "flow-run", refs.flow_run_name)


def _deployment_related(refs: FlowRunRefs) -> dict[str, str] | None:
    if refs.deployment_id is None:
        return None
    return _shared_related("deployment", refs.deployment_id, refs.deployment_name)


def _flow_related(refs: FlowRunRefs) -> dict[str, str] | None:
    return None if refs.flow_id is None else _shared_related("flow", refs.flow_id, refs.flow_name)


def _work_pool_related(refs: FlowRunRefs) -> dict[str, str] | None:
    if refs.work_pool_id is None:
        return None
    return _shared_related("work-pool", refs.work_pool_id, refs.work_pool_name)


def _worker_if_named(refs: FlowRunRefs, worker_type: WorkerType) -> dict[str, str] | None:
    return None if refs.worker_name is None else _shared_worker(worker_type, refs.worker_name)


def _present(*related: dict[str, str] | None) -> tuple[dict[str, str], ...]:
    return tuple([labels for labels in related if labels is not None])


def _labelled_related(refs: FlowRunRefs, worker_type: WorkerType) -> tuple[dict[str, str], ...]:
    """The related resources of a pod's labels or a task's tags, in the page's order."""
    return _present(
        _flow_run_related(refs),
        _deployment_related(refs),
        _flow_related(refs),
        _work_pool_related(refs),
        _worker_if_named(refs, worker_type),
    )


# --- Kubernetes ---------------------------------------------------------------------------


def kubernetes_pod_event(
    *,
    phase: PodPhase,
    pod_uid: str,
    pod_name: str,
    namespace: str,
    refs: FlowRunRefs,
    occurred: datetime,
    event_id: uuid.UUID,
    eviction_reason: str | None = None,
    diagnosis: str | None = None,
) -> Event:
    """`prefect.kubernetes.pod.{phase}`; `eviction_reason` goes with evicted, and only with it.

    `diagnosis` is the category of what is wrong with the pod, when something is.
    """
    if (phase == "evicted") != bool(eviction_reason):
        raise ValueError("eviction_reason is required for evicted pods and only for them")
    resource = _resource(f"prefect.kubernetes.pod.{pod_uid}", name=pod_name)
    resource["kubernetes.namespace"] = namespace
    if eviction_reason:
        resource["kubernetes.reason"] = eviction_reason
    if diagnosis:
        resource["kubernetes.diagnosis"] = diagnosis
    return Event(
        utc(occurred),
        f"prefect.kubernetes.pod.{phase}",
        resource,
        event_id,
        _labelled_related(refs, "kubernetes"),
    )


# --- Docker -------------------------------------------------------------------------------


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
    worker = _shared_worker("docker", refs.worker_name or worker_name)
    # The page makes the name label unconditional: a container whose name is unknown is
    # named by its id.
    return Event(
        occurred=utc(occurred),
        event=name,
        resource=_resource(
            f"prefect.docker.container.{container_id}", name=container_name or container_id
        ),
        related=(
            *_present(
                _flow_run_related(refs),
                _flow_related(refs),
                _deployment_related(refs),
                _work_pool_related(refs),
            ),
            worker,
        ),
        id=event_id,
    )


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


# --- ECS ----------------------------------------------------------------------------------


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
        resource=_resource(f"prefect.ecs.task.{ecs_task_id(task_arn)}", **extra),
        related=_labelled_related(refs, "ecs"),
        id=event_id,
    )


# --- Events no watcher can observe --------------------------------------------------------


def block_loaded(
    *,
    block_type_slug: str,
    block_document_id: uuid.UUID,
    block_document_name: str | None,
    occurred: datetime,
    event_id: uuid.UUID,
) -> Event:
    """`prefect.block.{type}.loaded`; an unnamed block document is named by its id, because
    the page makes the name label unconditional."""
    document = f"prefect.block-document.{block_document_id}"
    return Event(
        occurred=utc(occurred),
        event=f"prefect.block.{block_type_slug}.loaded",
        resource=_resource(document, name=block_document_name or str(block_document_id)),
        related=(_related(f"prefect.block-type.{block_type_slug}", "block-type"),),
        id=event_id,
    )


PullStepOutcome = Literal["executed", "failed"]


def pull_step(
    *,
    outcome: PullStepOutcome,
    flow_run_id: uuid.UUID,
    deployment_id: uuid.UUID | None,
    step: Mapping[str, Any],
    occurred: datetime,
    event_id: uuid.UUID,
    step_index: int = 0,
) -> Event:
    """`prefect.flow-run.pull-step.{executed,failed}`.

    `step` is the step as written in prefect.yaml: its fully qualified name mapped to its inputs;
    `step_index` its position among the deployment's pull steps. The payload is the step
    serialized as Prefect's own pull steps serialize it, so automations match either.
    """
    if len(step) != 1:
        raise ValueError("a pull step is one fully qualified name mapped to its inputs")
    ((qualified_name, inputs),) = step.items()
    if not isinstance(inputs, Mapping):
        raise ValueError("a pull step's inputs are a mapping of parameter names to values")
    related = (
        ()
        if deployment_id is None
        else (_related(f"prefect.deployment.{deployment_id}", "deployment"),)
    )
    return Event(
        occurred=utc(occurred),
        event=f"prefect.flow-run.pull-step.{outcome}",
        resource=_resource(f"prefect.flow-run.{flow_run_id}"),
        related=related,
        payload=serialized_pull_step(qualified_name, inputs, index=step_index),
        id=event_id,
    )


def serialized_pull_step(
    qualified_name: str, inputs: Mapping[str, Any], *, index: int
) -> dict[str, Any]:
    """The pull-step payload: the step's fully qualified name and inputs (secrets stay as the
    template strings the inputs hold), with the fields Prefect itself adds."""
    inputs_id = inputs.get("id")
    return {
        "index": index,
        "qualified_name": qualified_name,
        "step_name": qualified_name.rsplit(".", 1)[-1],
        "id": inputs_id if isinstance(inputs_id, str) else None,
        "inputs": dict(inputs),
    }


@dataclass(frozen=True, slots=True)
class TransferCounts:
    succeeded: int
    failed: int
    skipped: int


def workspace_transfer(
    *,
    transfer_id: uuid.UUID,
    description: str,
    source_profile: str,
    target_profile: str,
    source_url: str,
    target_url: str,
    total_resources: int,
    completed: TransferCounts | None,
    occurred: datetime,
    event_id: uuid.UUID,
) -> Event:
    """`prefect.workspace.transfer.started`, or `.completed` when `completed` is given."""
    payload: dict[str, Any] = {
        "source_profile": source_profile,
        "target_profile": target_profile,
        "source_url": source_url,
        "target_url": target_url,
        "total_resources": total_resources,
    }
    if completed is not None:
        payload |= {
            "succeeded": completed.succeeded,
            "failed": completed.failed,
            "skipped": completed.skipped,
        }
    stage = "started" if completed is None else "completed"
    return Event(
        occurred=utc(occurred),
        event=f"prefect.workspace.transfer.{stage}",
        resource=_resource(f"prefect.workspace.transfer.{transfer_id}", name=description),
        payload=payload,
        id=event_id,
    )
