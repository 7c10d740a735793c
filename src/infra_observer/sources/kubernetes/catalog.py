"""Builders for the Kubernetes source's events: `prefect.kubernetes.pod.{phase}`.

Each builder takes typed inputs and returns an `Event` whose resource labels and related
resources match the pod part of the reference page; the pod source builds its events only
here.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal, get_args

from infra_observer.events.model import Event, resource_labels, utc
from infra_observer.events.related import FlowRunRefs, labelled_related

PodPhase = Literal["pending", "running", "succeeded", "failed", "unknown", "evicted"]

POD_PHASES: tuple[PodPhase, ...] = get_args(PodPhase)


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
    resource = resource_labels(f"prefect.kubernetes.pod.{pod_uid}", name=pod_name)
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
        labelled_related(refs, "kubernetes"),
    )
