"""Builders for the events of the reference page that no source observes.

A block loaded, a pull step run, a workspace transfer: `infra-observer emit` sends them for
whoever does the work. Each builder takes typed inputs and returns an `Event` whose resource
labels, related resources and payload match the page's tables. The events of a pod, a
container or an ECS task are built by that source's own catalog
(`infra_observer.sources.<name>.catalog`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from infra_observer.events.model import Event, resource_labels, utc
from infra_observer.events.related import related_labels

PullStepOutcome = Literal["executed", "failed"]


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
        resource=resource_labels(document, name=block_document_name or str(block_document_id)),
        related=(related_labels(f"prefect.block-type.{block_type_slug}", "block-type"),),
        id=event_id,
    )


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
        else (related_labels(f"prefect.deployment.{deployment_id}", "deployment"),)
    )
    return Event(
        occurred=utc(occurred),
        event=f"prefect.flow-run.pull-step.{outcome}",
        resource=resource_labels(f"prefect.flow-run.{flow_run_id}"),
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


@dataclass(frozen=True, slots=True)
class Transfer:
    """One transfer of resources between two workspaces, as both of its events name it."""

    transfer_id: uuid.UUID
    description: str
    source_profile: str
    target_profile: str
    source_url: str
    target_url: str
    total_resources: int


def workspace_transfer(
    transfer: Transfer,
    *,
    completed: TransferCounts | None,
    occurred: datetime,
    event_id: uuid.UUID,
) -> Event:
    """`prefect.workspace.transfer.started`, or `.completed` when `completed` is given."""
    payload: dict[str, Any] = {
        "source_profile": transfer.source_profile,
        "target_profile": transfer.target_profile,
        "source_url": transfer.source_url,
        "target_url": transfer.target_url,
        "total_resources": transfer.total_resources,
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
        resource=resource_labels(
            f"prefect.workspace.transfer.{transfer.transfer_id}", name=transfer.description
        ),
        payload=payload,
        id=event_id,
    )
