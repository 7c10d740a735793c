"""Pure translation: a pod as the API sent it, plus what was known of it, into events.

No I/O and no clock: the caller passes the observation time. A pod is the raw JSON object
(a dict), never the generated model classes, which cost far more to build than to read.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from infra_observer.errors import InputError
from infra_observer.events.ids import diagnosed_pod_event_id, pod_event_id
from infra_observer.events.model import Event, utc
from infra_observer.events.related import FlowRunRefs, refs_from_labels
from infra_observer.sources.base import Problem, Translation
from infra_observer.sources.kubernetes.catalog import PodPhase, kubernetes_pod_event
from infra_observer.sources.kubernetes.diagnosis import (
    Category,
    diagnose,
    eviction_reason,
)
from infra_observer.sources.skips import flow_run_skip

FLOW_RUN_LABEL = "prefect.io/flow-run-id"

# Raw Kubernetes phase -> event phase. The raw string goes into the id (contract formula).
_PHASES: dict[str, PodPhase] = {
    "Pending": "pending",
    "Running": "running",
    "Succeeded": "succeeded",
    "Failed": "failed",
    "Unknown": "unknown",
}

# How event ids are made: the events contract's formula, or prefect-kubernetes' one, which
# adds the diagnosis (see docs/sources/kubernetes.md).
EventIdScheme = Literal["contract", "prefect-kubernetes"]


@dataclass(frozen=True, slots=True)
class PodState:
    """What is remembered of one pod: its last (phase, restart count, diagnosis) and the
    states sent.

    `sent` holds only the states with the current restart count: the count never goes
    down, so older ones cannot come back. A state is the phase, or with the
    prefect-kubernetes id scheme the phase and diagnosis (see `_sent_key`): a few entries.
    """

    phase: str
    restart_count: int
    sent: tuple[str, ...] = ()
    diagnosis: Category | None = None


def translate(
    pod: object,
    previous: PodState | None,
    *,
    observed: datetime,
    id_scheme: EventIdScheme = "contract",
) -> Translation[PodState]:
    """The events for `pod`, given what was known of it before (None: never seen).

    One event per change of (phase, restart count), and with the prefect-kubernetes id
    scheme per change of diagnosis too; the same state again gives nothing. A pod whose
    flow-run label is empty or not a UUID gives none (`skipped` says why). The result's
    key is the pod's uid; `unchanged="repeated"` when the pod is back in a state already
    sent (same id): nothing is emitted.
    Raises `InputError` naming what is wrong when the object is not a usable pod.
    """
    # A known pod's uid was checked when it was first seen: `previous` was found by it.
    fields = _read(pod, uid_checked=previous is not None)
    category = diagnose(fields.status)
    if (
        previous is not None
        and previous.phase == fields.phase
        and previous.restart_count == fields.restart_count
    ):
        if previous.diagnosis == category:
            return Translation(fields.uid, state=previous)
        if id_scheme == "contract":  # same id as the event already sent: only remembered
            state = PodState(fields.phase, fields.restart_count, previous.sent, category)
            return Translation(fields.uid, state=state, diagnosis_changed=True)
    changed = category != (None if previous is None else previous.diagnosis)
    key = fields.phase if id_scheme == "contract" else _sent_key(fields.phase, category)
    sent = _sent_before(previous, fields.restart_count)
    if key in sent:
        # Back to a state already sent (Running, Unknown, Running): its id is the same.
        state = PodState(fields.phase, fields.restart_count, sent, category)
        return Translation(fields.uid, state=state, unchanged="repeated", diagnosis_changed=changed)
    refs, label_problems = refs_from_labels(fields.labels)
    if refs.flow_run_id is None:
        skip = flow_run_skip(fields.labels, keys=(FLOW_RUN_LABEL,))
        return Translation(fields.uid, state=None, skipped=skip)
    state = PodState(fields.phase, fields.restart_count, (*sent, key), category)
    problems = [Problem("label", detail) for detail in label_problems] if label_problems else []
    event = _event(
        fields, refs, category=category, observed=observed, problems=problems, scheme=id_scheme
    )
    return Translation(
        fields.uid, state=state, events=[event], problems=problems, diagnosis_changed=changed
    )


def _sent_key(phase: str, category: Category | None) -> str:
    return phase if category is None else f"{phase} {category}"


def _sent_before(previous: PodState | None, restart_count: int) -> tuple[str, ...]:
    if previous is None or previous.restart_count != restart_count:
        return ()
    return previous.sent


@dataclass(slots=True)
class _PodFields:
    uid: str
    name: str
    namespace: str
    phase: str
    restart_count: int
    labels: Mapping[str, str]
    metadata: Mapping[str, Any]
    status: Mapping[str, Any]


# The apiserver's uids are UUIDs; anything else would not make a valid resource id.
_UID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _read(pod: object, *, uid_checked: bool = False) -> _PodFields:
    # Objects are checked with `dict`, not `Mapping`: decoded JSON objects are dicts, and
    # the ABC check costs several times more, dozens of times per watch line.
    if not isinstance(pod, dict):
        raise InputError(f"pod is a {type(pod).__name__}, not an object")
    metadata = _mapping(pod, "metadata", "pod")
    status = _mapping(pod, "status", "pod")
    uid = _text(metadata, "uid", "metadata")
    if not uid_checked and not _UID.fullmatch(uid):
        raise InputError(f"metadata.uid {uid!r} is not an identifier")
    name = _text(metadata, "name", "metadata")
    namespace = _text(metadata, "namespace", "metadata")
    phase = _text(status, "phase", "status")
    if phase not in _PHASES:
        raise InputError(f"pod {namespace}/{name}: status.phase {phase!r} is not a known phase")
    labels = _mapping(metadata, "labels", "metadata")
    for value in labels.values():
        if type(value) is not str:
            raise InputError(
                f"pod {namespace}/{name}: metadata.labels has values that are not strings"
            )
    try:
        restarts = _restart_count(status)
    except InputError as exc:
        raise InputError(f"pod {namespace}/{name}: {exc}") from None
    return _PodFields(uid, name, namespace, phase, restarts, labels, metadata, status)


def _mapping(parent: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{where}.{key} is a {type(value).__name__}, not an object")
    return value


def _text(parent: Mapping[str, Any], key: str, where: str) -> str:
    value = parent.get(key)
    if not isinstance(value, str) or not value:
        raise InputError(f"pod {where}.{key} is missing or not a non-empty string: {value!r}")
    return value


def _restart_count(status: Mapping[str, Any]) -> int:
    """Sum of restartCount over containerStatuses; init containers excluded (contract)."""
    containers = status.get("containerStatuses")
    if containers is None:
        return 0
    if type(containers) is not list:
        raise InputError("status.containerStatuses is not a list of objects")
    total = 0
    for container in containers:
        if type(container) is not dict:
            raise InputError("status.containerStatuses is not a list of objects")
        count = container.get("restartCount", 0)
        if type(count) is not int or count < 0:  # `type`, not isinstance: True is no count
            raise InputError(f"a restartCount is {count!r}, not a count")
        total += count
    return total


def _event(
    fields: _PodFields,
    refs: FlowRunRefs,
    *,
    category: Category | None,
    observed: datetime,
    problems: list[Problem],
    scheme: EventIdScheme,
) -> Event:
    eviction = eviction_reason(fields.status) if category == "Evicted" else None
    phase: PodPhase = "evicted" if eviction else _PHASES[fields.phase]
    when = occurred_at(fields, problems=problems) or utc(observed)
    if scheme == "contract":
        event_id = _event_id(fields)
    else:
        event_id = diagnosed_pod_event_id(
            uid=fields.uid,
            phase=fields.phase,
            restart_count=fields.restart_count,
            diagnosis=category,
        )
    return kubernetes_pod_event(
        phase=phase,
        pod_uid=fields.uid,
        pod_name=fields.name,
        namespace=fields.namespace,
        refs=refs,
        occurred=when,
        event_id=event_id,
        eviction_reason=eviction,
        diagnosis=category,
    )


def _event_id(fields: _PodFields) -> uuid.UUID:
    return pod_event_id(uid=fields.uid, phase=fields.phase, restart_count=fields.restart_count)


def occurred_at(fields: _PodFields, *, problems: list[Problem]) -> datetime | None:
    """The pod's own time of its current phase; None when it has none (use observation time).

    Pending: creation. Running: the latest container start, else status.startTime.
    Terminal: the latest container or init-container finish. Unknown: none.
    """
    if fields.phase == "Pending":
        return _time(fields.metadata.get("creationTimestamp"), problems)
    if fields.phase == "Running":
        starts = _container_times(fields.status, ("containerStatuses",), "running", "startedAt")
        return _latest(starts, problems) or _time(fields.status.get("startTime"), problems)
    if fields.phase in ("Succeeded", "Failed"):
        keys = ("containerStatuses", "initContainerStatuses")
        return _latest(_container_times(fields.status, keys, "terminated", "finishedAt"), problems)
    return None


def _container_times(
    status: Mapping[str, Any], keys: tuple[str, ...], state: str, stamp: str
) -> list[object]:
    times: list[object] = []
    for key in keys:
        containers = status.get(key)
        if not isinstance(containers, list):
            continue
        for container in containers:
            current = container.get("state") if isinstance(container, dict) else None
            detail = current.get(state) if isinstance(current, dict) else None
            if isinstance(detail, dict) and detail.get(stamp) is not None:
                times.append(detail[stamp])
    return times


def _latest(values: list[object], problems: list[Problem]) -> datetime | None:
    parsed = [moment for value in values if (moment := _time(value, problems)) is not None]
    return max(parsed, default=None)


def _time(value: object, problems: list[Problem]) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return utc(datetime.fromisoformat(value))
        except ValueError:
            pass
    problems.append(Problem("timestamp", f"timestamp {value!r} is not RFC 3339"))
    return None
