"""Deterministic event ids: the same observation always gets the same id, on any replica."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping


def stable_id(fields: Mapping[str, object]) -> uuid.UUID:
    """uuid5 over the fields as sorted JSON, with Python's default separators.

    With fields ``{"phase", "restart_count", "uid"}`` this is exactly the formula of the
    reference Kubernetes observer, so both deduplicate against each other on the server.
    """
    return uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(fields, sort_keys=True))


def pod_event_id(*, uid: str, phase: str, restart_count: int) -> uuid.UUID:
    """The id the events contract gives a pod event: its phase, restart count and uid."""
    return stable_id({"phase": phase, "restart_count": restart_count, "uid": uid})


def diagnosed_pod_event_id(
    *, uid: str, phase: str, restart_count: int, diagnosis: str | None
) -> uuid.UUID:
    """The id current prefect-kubernetes gives a pod event: the contract's fields plus the
    diagnosis category (null when there is none), so a change of diagnosis is a new event."""
    return stable_id(
        {"diagnosis": diagnosis, "phase": phase, "restart_count": restart_count, "uid": uid}
    )


def container_event_id(
    *, container_id: str, status: str, state_marks: Mapping[str, str]
) -> uuid.UUID:
    """Same container, same status, same state timestamps: same id."""
    return stable_id({"container_id": container_id, "status": status, **state_marks})
