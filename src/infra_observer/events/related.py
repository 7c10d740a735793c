"""The Prefect objects an event relates to, read from labels or tags every source shares.

A pod's labels (`prefect.io/x`), a container's labels (Docker's reverse-DNS `io.prefect.x`)
and a task's tags carry the same references: the flow run, its deployment, flow, work pool
and worker. Each source's catalog lists them in the order its part of the reference page
gives; the builders for one related resource are here.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
import uuid
from collections.abc import Mapping
from typing import Literal, NamedTuple

from infra_observer.events.model import RESOURCE_ID, RESOURCE_NAME, RESOURCE_ROLE

WorkerType = Literal["kubernetes", "docker", "ecs"]

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
    sets each field through `object.__setattr__`.
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
    # Positional: building a named tuple from keywords is the slower way.
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


def related_labels(resource_id: str, role: str, name: str | None = None) -> dict[str, str]:
    """The labels of one related resource: its id, its role and, when known, its name."""
    labels = {RESOURCE_ID: resource_id, RESOURCE_ROLE: role}
    if name:
        labels[RESOURCE_NAME] = name
    return labels


def worker_resource(*, worker_type: WorkerType, worker_name: str) -> dict[str, str]:
    """The worker that manages the infrastructure, with its `prefect.worker-type`."""
    labels = related_labels(
        f"prefect.worker.{worker_type}.{slugify(worker_name)}", "worker", worker_name
    )
    labels["prefect.worker-type"] = worker_type
    return labels


# A deployment, flow, work pool or worker is the same related resource for every flow run
# it has: built once and shared (never mutated: `Event` exposes them as read-only
# Mappings). A flow run's own is built each time: it recurs for a few events of its pod
# or task, usually too far apart for a bounded cache to still hold it.
@functools.lru_cache(maxsize=1024)
def _shared_related(kind: str, ref_id: str, name: str | None) -> dict[str, str]:
    return related_labels(f"prefect.{kind}.{ref_id}", kind, name)


@functools.lru_cache(maxsize=256)
def shared_worker(worker_type: WorkerType, worker_name: str) -> dict[str, str]:
    """`worker_resource`, built once per worker and shared by its events (never mutate it)."""
    return worker_resource(worker_type=worker_type, worker_name=worker_name)


def flow_run_related(refs: FlowRunRefs) -> dict[str, str] | None:
    """The flow run, when its id is known."""
    if refs.flow_run_id is None:
        return None
    return related_labels(f"prefect.flow-run.{refs.flow_run_id}", "flow-run", refs.flow_run_name)


def deployment_related(refs: FlowRunRefs) -> dict[str, str] | None:
    """The deployment, when its id is known."""
    if refs.deployment_id is None:
        return None
    return _shared_related("deployment", refs.deployment_id, refs.deployment_name)


def flow_related(refs: FlowRunRefs) -> dict[str, str] | None:
    """The flow, when its id is known."""
    return None if refs.flow_id is None else _shared_related("flow", refs.flow_id, refs.flow_name)


def work_pool_related(refs: FlowRunRefs) -> dict[str, str] | None:
    """The work pool, when its id is known."""
    if refs.work_pool_id is None:
        return None
    return _shared_related("work-pool", refs.work_pool_id, refs.work_pool_name)


def present(*related: dict[str, str] | None) -> tuple[dict[str, str], ...]:
    """The related resources that are known, in the order given."""
    return tuple([labels for labels in related if labels is not None])


def labelled_related(refs: FlowRunRefs, worker_type: WorkerType) -> tuple[dict[str, str], ...]:
    """The related resources of a pod's labels or a task's tags, in the page's order.

    The worker comes last, and only when the labels name it.
    """
    worker = None if refs.worker_name is None else shared_worker(worker_type, refs.worker_name)
    return present(
        flow_run_related(refs),
        deployment_related(refs),
        flow_related(refs),
        work_pool_related(refs),
        worker,
    )
