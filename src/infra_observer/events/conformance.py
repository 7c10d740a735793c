"""The infrastructure events reference page as data, and a check of any event against it.

One concern, however long: the page's table of every event family, and the check that reads it.

`CATALOG` transcribes the page's tables (names, variants, resource labels, related resources,
payloads) and is the project's one copy of those facts: the golden tests hold every builder
to it, and a drift check compares it with the page itself, which is not part of the
repository, whenever the page is beside the checkout. `check_against_catalog` then serves
`infra-observer validate` and anything else that must judge events it did not build.

Every family is here, the sources' too (their variants, resource labels and related
resources), because it is the page's table, not the sources' code: it imports no source,
so `validate` judges events without loading any watcher.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from infra_observer.events.model import RESOURCE_ID, RESOURCE_NAME, RESOURCE_ROLE, Event, Labels

WORKER_TYPE = "prefect.worker-type"

PayloadType = Literal["string", "integer"]
PayloadKind = Literal["none", "fields", "pull-step"]


@dataclass(frozen=True, slots=True)
class LabelSpec:
    """A resource label other than `prefect.resource.id`."""

    key: str
    description: str
    required: bool = True
    """False: "when available"."""
    only_for: tuple[str, ...] = ()
    """Variants that carry the label (and must); empty: every variant."""
    extension: bool = False
    """The project's own addition, not on the reference page (the drift check skips it)."""


@dataclass(frozen=True, slots=True)
class RelatedSpec:
    role: str
    id_pattern: str
    when: str
    """The page's "When present" text."""
    always: bool
    worker_type: str | None = None


@dataclass(frozen=True, slots=True)
class PayloadField:
    name: str
    type: PayloadType
    description: str


@dataclass(frozen=True, slots=True)
class FamilySpec:
    name: str
    """The event name; a `{placeholder}` stands for the variant."""
    summary: str
    resource_id: str
    labels: tuple[LabelSpec, ...]
    related: tuple[RelatedSpec, ...]
    payload_kind: PayloadKind
    payload: tuple[PayloadField, ...] = ()
    variants: tuple[tuple[str, str], ...] = ()
    """(variant, description) for a `{placeholder}` with a fixed set of values."""

    @property
    def names(self) -> tuple[str, ...]:
        """Every concrete event name; a free `{type}` slug stays a pattern."""
        if not self.variants:
            return (self.name,)
        return tuple(_fill(self.name, variant) for variant, _ in self.variants)


def _fill(pattern: str, value: str) -> str:
    return re.sub(r"\{[a-z-]+\}", value, pattern, count=1)


_SLUG = r"[a-z0-9]+(?:-[a-z0-9]+)*"
_TOKEN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
PLACEHOLDERS: Mapping[str, str] = {
    "uuid": _UUID,
    "slug": _SLUG,
    "type": _SLUG,
    "uid": _TOKEN,
    "container-id": _TOKEN,
    "task-id": _TOKEN,
}


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """`prefect.flow-run.{uuid}` → a regex matching the whole id."""
    parts = re.split(r"(\{[a-z-]+\})", pattern)
    regex = "".join(
        f"(?:{PLACEHOLDERS[part[1:-1]]})" if part.startswith("{") else re.escape(part)
        for part in parts
    )
    return re.compile(regex)


_NO_PAYLOAD: tuple[PayloadField, ...] = ()
_TRANSFER_FIELDS = (
    PayloadField("source_profile", "string", "Name of the source Prefect profile"),
    PayloadField("target_profile", "string", "Name of the target Prefect profile"),
    PayloadField("source_url", "string", "API URL of the source"),
    PayloadField("target_url", "string", "API URL of the target"),
)


def _refs(source: str, *, worker_type: str) -> tuple[RelatedSpec, ...]:
    """Kubernetes pods and ECS tasks: related resources read from labels or tags."""
    return (
        RelatedSpec(
            "flow-run",
            "prefect.flow-run.{uuid}",
            f"Always (from prefect.io/flow-run-id {source})",
            always=True,
        ),
        RelatedSpec(
            "deployment",
            "prefect.deployment.{uuid}",
            f"When prefect.io/deployment-id {source} is set",
            always=False,
        ),
        RelatedSpec(
            "flow", "prefect.flow.{uuid}", f"When prefect.io/flow-id {source} is set", always=False
        ),
        RelatedSpec(
            "work-pool",
            "prefect.work-pool.{uuid}",
            f"When prefect.io/work-pool-id {source} is set",
            always=False,
        ),
        RelatedSpec(
            "worker",
            f"prefect.worker.{worker_type}.{{slug}}",
            f"When prefect.io/worker-name {source} is set "
            f"(includes prefect.worker-type: {worker_type})",
            always=False,
            worker_type=worker_type,
        ),
    )


_DOCKER_RELATED = (
    RelatedSpec(
        "flow-run",
        "prefect.flow-run.{uuid}",
        "When available from worker configuration",
        always=False,
    ),
    RelatedSpec("flow", "prefect.flow.{uuid}", "When available", always=False),
    RelatedSpec("deployment", "prefect.deployment.{uuid}", "When available", always=False),
    RelatedSpec(
        "work-pool",
        "prefect.work-pool.{uuid}",
        "When the worker is attached to a work pool",
        always=False,
    ),
    RelatedSpec(
        "worker",
        "prefect.worker.docker.{slug}",
        "Always (the worker that manages the container)",
        always=True,
        worker_type="docker",
    ),
)
_DOCKER_LABELS = (LabelSpec(RESOURCE_NAME, "Container name"),)
_PULL_STEP_RELATED = (
    RelatedSpec(
        "deployment", "prefect.deployment.{uuid}", "When the deployment is known", always=False
    ),
)

# (variant, description) as the page lists them. Each source's catalog spells the same
# names as the type of its builder's argument (`sources/<name>/catalog.py`); the golden
# tests hold the two to each other.
_CONTAINER_VARIANTS = (
    ("created", "Container has been created"),
    ("running", "Container is running"),
    ("paused", "Container is paused"),
    ("restarting", "Container is restarting"),
    ("removing", "Container is being removed"),
    ("exited", "Container has exited"),
    ("dead", "Container is in a dead state"),
)
_POD_VARIANTS = (
    ("pending", "Pod is in the Pending phase"),
    ("running", "Pod is in the Running phase"),
    ("succeeded", "Pod completed successfully"),
    ("failed", "Pod terminated with an error"),
    ("unknown", "Pod is in an unknown state"),
    ("evicted", "Pod was evicted from the node"),
)
_ECS_VARIANTS = (
    ("provisioning", "Task resources are being provisioned"),
    ("pending", "Task is waiting to be placed on a container instance"),
    ("activating", "Task is being activated"),
    ("running", "Task is running"),
    ("deactivating", "Task is being deactivated"),
    ("stopping", "Task is being stopped"),
    ("deprovisioning", "Task resources are being deprovisioned"),
    ("stopped", "Task has stopped"),
    ("deleted", "Task has been deleted"),
)

CATALOG: tuple[FamilySpec, ...] = (
    FamilySpec(
        name="prefect.block.{type}.loaded",
        summary="Emitted when a block is loaded from the server. The {type} portion is the "
        "block type slug (for example, prefect.block.slack-webhook.loaded or "
        "prefect.block.s3-bucket.loaded).",
        resource_id="prefect.block-document.{uuid}",
        labels=(LabelSpec(RESOURCE_NAME, "Block document name"),),
        related=(RelatedSpec("block-type", "prefect.block-type.{slug}", "Always", always=True),),
        payload_kind="none",
    ),
    FamilySpec(
        name="prefect.flow-run.pull-step.executed",
        summary="Emitted when a deployment pull step completes successfully during flow run "
        "infrastructure setup.",
        resource_id="prefect.flow-run.{uuid}",
        labels=(),
        related=_PULL_STEP_RELATED,
        payload_kind="pull-step",
    ),
    FamilySpec(
        name="prefect.flow-run.pull-step.failed",
        summary="Emitted when a deployment pull step fails during flow run infrastructure setup.",
        resource_id="prefect.flow-run.{uuid}",
        labels=(),
        related=_PULL_STEP_RELATED,
        payload_kind="pull-step",
    ),
    FamilySpec(
        name="prefect.workspace.transfer.started",
        summary="Emitted when a workspace-to-workspace resource transfer begins "
        "(via prefect transfer).",
        resource_id="prefect.workspace.transfer.{uuid}",
        labels=(
            LabelSpec(
                RESOURCE_NAME,
                "Description of the transfer direction (for example, local → cloud/my-workspace)",
            ),
        ),
        related=(),
        payload_kind="fields",
        payload=(
            *_TRANSFER_FIELDS,
            PayloadField("total_resources", "integer", "Total number of resources to transfer"),
        ),
    ),
    FamilySpec(
        name="prefect.workspace.transfer.completed",
        summary="Emitted when a workspace transfer completes.",
        resource_id="prefect.workspace.transfer.{uuid}",
        labels=(
            LabelSpec(
                RESOURCE_NAME,
                "Description of the transfer direction (for example, local → cloud/my-workspace)",
            ),
        ),
        related=(),
        payload_kind="fields",
        payload=(
            *_TRANSFER_FIELDS,
            PayloadField("total_resources", "integer", "Total number of resources transferred"),
            PayloadField("succeeded", "integer", "Number of resources transferred successfully"),
            PayloadField("failed", "integer", "Number of resources that failed to transfer"),
            PayloadField("skipped", "integer", "Number of resources skipped"),
        ),
    ),
    FamilySpec(
        name="prefect.docker.container.{status}",
        summary="Emitted when a Docker container\u2019s status changes. Events are chained using "
        "the follows field to track status progression.",
        resource_id="prefect.docker.container.{container-id}",
        labels=_DOCKER_LABELS,
        related=_DOCKER_RELATED,
        payload_kind="none",
        variants=_CONTAINER_VARIANTS,
    ),
    FamilySpec(
        name="prefect.docker.container.creation-failed",
        summary="Emitted when a Docker container fails to be created. Same resource and "
        "related resources as prefect.docker.container.{status}.",
        resource_id="prefect.docker.container.{container-id}",
        labels=_DOCKER_LABELS,
        related=_DOCKER_RELATED,
        payload_kind="none",
    ),
    FamilySpec(
        name="prefect.kubernetes.pod.{phase}",
        summary="Emitted when a Kubernetes pod transitions to a new phase. Events use "
        "deterministic IDs based on the pod UID, phase, and restart count for deduplication. "
        "Events within 5 minutes of each other are chained using the follows field.",
        resource_id="prefect.kubernetes.pod.{uid}",
        labels=(
            LabelSpec(RESOURCE_NAME, "Pod name"),
            LabelSpec("kubernetes.namespace", "Kubernetes namespace"),
            LabelSpec(
                "kubernetes.reason",
                "Eviction reason (only for evicted pods)",
                only_for=("evicted",),
            ),
            LabelSpec(
                "kubernetes.diagnosis",
                "Category of what is wrong with the pod, such as OOMKilled (when one is diagnosed)",
                required=False,
                extension=True,
            ),
        ),
        related=_refs("pod label", worker_type="kubernetes"),
        payload_kind="none",
        variants=_POD_VARIANTS,
    ),
    FamilySpec(
        name="prefect.ecs.task.{status}",
        summary="Emitted when an ECS task transitions to a new status. Events use the AWS "
        "EventBridge event UUID for deterministic tracking. Events within 5 minutes of each "
        "other are chained using the follows field.",
        resource_id="prefect.ecs.task.{task-id}",
        labels=(
            LabelSpec("ecs.taskArn", "Full ECS task ARN"),
            LabelSpec("ecs.clusterArn", "ECS cluster ARN (when available)", required=False),
            LabelSpec(
                "ecs.taskDefinitionArn",
                "ECS task definition ARN (when available)",
                required=False,
            ),
            LabelSpec(
                "ecs.diagnosis",
                "Category of what went wrong with the task, such as OutOfMemoryError "
                "(when one is diagnosed)",
                required=False,
                extension=True,
            ),
        ),
        related=_refs("task tag", worker_type="ecs"),
        payload_kind="none",
        variants=_ECS_VARIANTS,
    ),
)

_RELATED_COMMON_KEYS = frozenset({RESOURCE_ID, RESOURCE_ROLE, RESOURCE_NAME})
_PULL_STEP_FIELDS: Mapping[str, str] = {
    "index": "integer",
    "qualified_name": "string",
    "step_name": "string",
    "id": "string or null",
    "inputs": "object",
}


def find_family(name: str) -> tuple[FamilySpec, str | None] | None:
    """The family an event name belongs to, and its variant (None for a fixed name)."""
    for family in CATALOG:
        if "{" not in family.name:
            if name == family.name:
                return family, None
            continue
        head, _, tail = re.split(r"(\{[a-z-]+\})", family.name, maxsplit=1)
        if not (name.startswith(head) and name.endswith(tail)):
            continue
        variant = name[len(head) : len(name) - len(tail)]
        allowed = [value for value, _ in family.variants]
        if (allowed and variant in allowed) or (not allowed and re.fullmatch(_SLUG, variant)):
            return family, variant
    return None


def check_against_catalog(event: Event) -> list[str]:
    """Every way `event` deviates from the reference page; empty when it conforms."""
    found = find_family(event.event)
    if found is None:
        return [f"event name {event.event!r} is not in the infrastructure events catalog"]
    family, variant = found
    return [
        *_resource_problems(family, variant, event.resource),
        *_related_problems(family, event.related),
        *_payload_problems(family, event.payload),
    ]


def _resource_problems(family: FamilySpec, variant: str | None, resource: Labels) -> list[str]:
    problems: list[str] = []
    resource_id = resource.get(RESOURCE_ID, "")
    if not pattern_regex(family.resource_id).fullmatch(resource_id):
        problems.append(
            f"resource id {resource_id!r} does not match {family.resource_id} ({family.name})"
        )
    documented = {RESOURCE_ID}
    for label in family.labels:
        applies = not label.only_for or variant in label.only_for
        if applies:
            documented.add(label.key)
        present = bool(resource.get(label.key))
        if applies and label.required and not present:
            problems.append(f"resource label {label.key!r} is missing ({label.description})")
        elif not applies and label.key in resource:
            only = ", ".join(label.only_for)
            problems.append(f"resource label {label.key!r} is only for {only}, not {variant}")
    for key in resource:
        if key not in documented and not any(key == label.key for label in family.labels):
            problems.append(f"resource label {key!r} is not documented for {family.name}")
    return problems


def _related_problems(family: FamilySpec, related: Sequence[Labels]) -> list[str]:
    specs = {spec.role: spec for spec in family.related}
    problems: list[str] = []
    seen: set[str] = set()
    for index, labels in enumerate(related):
        role = labels.get(RESOURCE_ROLE, "")
        spec = specs.get(role)
        if spec is None:
            known = ", ".join(specs) or "none"
            problems.append(
                f"related[{index}] has role {role!r}, not documented for {family.name} "
                f"(documented: {known})"
            )
            continue
        if role in seen:
            problems.append(f"related[{index}]: role {role!r} appears more than once")
        seen.add(role)
        problems.extend(_one_related_problems(index, spec, labels))
    for spec in family.related:
        if spec.always and spec.role not in seen:
            problems.append(f"related resource with role {spec.role!r} is missing ({spec.when})")
    return problems


def _one_related_problems(index: int, spec: RelatedSpec, labels: Labels) -> list[str]:
    problems: list[str] = []
    resource_id = labels.get(RESOURCE_ID, "")
    if not pattern_regex(spec.id_pattern).fullmatch(resource_id):
        problems.append(
            f"related[{index}] ({spec.role}) id {resource_id!r} does not match {spec.id_pattern}"
        )
    allowed = set(_RELATED_COMMON_KEYS)
    if spec.worker_type is not None:
        allowed.add(WORKER_TYPE)
        if labels.get(WORKER_TYPE) != spec.worker_type:
            problems.append(
                f"related[{index}] ({spec.role}) label {WORKER_TYPE!r} is "
                f"{labels.get(WORKER_TYPE)!r}, expected {spec.worker_type!r}"
            )
    problems.extend(
        f"related[{index}] ({spec.role}) label {key!r} is not documented"
        for key in labels
        if key not in allowed
    )
    return problems


def _payload_problems(family: FamilySpec, payload: Mapping[str, Any]) -> list[str]:
    if family.payload_kind == "none":
        return [] if not payload else [f"payload must be empty for {family.name}"]
    if family.payload_kind == "pull-step":
        return _pull_step_problems(payload)
    expected = {field.name: field.type for field in family.payload}
    problems = [f"payload field {name!r} is missing" for name in expected if name not in payload]
    for name, value in payload.items():
        if name not in expected:
            problems.append(f"payload field {name!r} is not documented for {family.name}")
        elif json_type(value) != expected[name]:
            problems.append(
                f"payload field {name!r} is {json_type(value)}, expected {expected[name]}"
            )
    return problems


def _pull_step_problems(payload: Mapping[str, Any]) -> list[str]:
    """The serialized step: Prefect's own fields around the fully qualified name and inputs."""
    problems = [
        f"payload field {name!r} is missing" for name in _PULL_STEP_FIELDS if name not in payload
    ]
    for name, value in payload.items():
        expected = _PULL_STEP_FIELDS.get(name)
        if expected is None:
            problems.append(f"payload field {name!r} is not part of a serialized pull step")
        elif json_type(value) not in expected.split(" or "):
            problems.append(f"payload field {name!r} is {json_type(value)}, expected {expected}")
    qualified = payload.get("qualified_name")
    if isinstance(qualified, str) and not qualified:
        problems.append("payload field 'qualified_name' is empty")
    elif isinstance(qualified, str) and payload.get("step_name") != qualified.rsplit(".", 1)[-1]:
        problems.append("payload field 'step_name' is not the last part of 'qualified_name'")
    return problems


def json_type(value: object) -> str:
    """The JSON type name of a decoded value."""
    if value is None:
        return "null"
    # bool before int: a JSON true is not an integer.
    for kind, name in _JSON_TYPES:
        if isinstance(value, kind):
            return name
    return type(value).__name__


_JSON_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (Mapping, "object"),
    ((list, tuple), "array"),
)
