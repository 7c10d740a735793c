"""What a flow run's pod asks of the run: still pending, past pending, or crashed; and whose
logs tell why.

Pure functions. A Pending pod keeps its run pending. A Failed pod crashes its run only when
no Job owns it: a Job may start another pod, so a Job's failure is decided by the Job
(`jobs.py`), never by one of its pods. Any other pod that left Pending (Running, Succeeded, a
Job's pod Failed) is past pending: a pending proposal still queued for its run is stale. A
new diagnosis is told whatever the phase.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

from infra_observer.observations import CrashLogReader, Diagnosis, Observation, Wanted

FLOW_CONTAINER: Final = "prefect-job"
"""The container that runs the flow in the Jobs Prefect's Kubernetes worker creates."""
_STARTED_PHASES: Final = frozenset({"Running", "Succeeded"})


def pod_wants(
    *,
    phase: str,
    namespace: str,
    name: str,
    owner_kinds: Sequence[str],
    diagnosis: Diagnosis | None,
) -> tuple[Wanted | None, str]:
    """The state the pod's phase implies for its run, and the message to propose it with."""
    why = f" {diagnosis.summary}" if diagnosis is not None else ""
    if phase == "Pending":
        return "pending", f"Kubernetes pod {namespace}/{name} is pending.{why}"
    if phase == "Failed" and "Job" not in owner_kinds:
        return "crashed", f"Kubernetes pod {namespace}/{name} failed.{why}"
    return None, ""


def pod_past_pending(*, phase: str, owner_kinds: Sequence[str]) -> bool:
    """True when the pod left Pending without crashing its run.

    `Unknown` says nothing either way: the node stopped reporting the pod.
    """
    if phase == "Failed":
        return "Job" in owner_kinds
    return phase in _STARTED_PHASES


def pod_observation(
    *,
    flow_run_id: uuid.UUID,
    phase: str,
    namespace: str,
    name: str,
    owner_kinds: Sequence[str],
    diagnosis: Diagnosis | None,
    diagnosis_changed: bool,
    crash_logs: CrashLogReader | None,
) -> Observation | None:
    """What a change of the pod tells the lifecycle layer; None when nothing.

    `diagnosis` is the pod's current one (it goes into the message); it is handed over to
    be written to the run's logs only when its category changed.
    """
    wants, message = pod_wants(
        phase=phase, namespace=namespace, name=name, owner_kinds=owner_kinds, diagnosis=diagnosis
    )
    return Observation.of_change(
        flow_run_id,
        "kubernetes",
        wants=wants,
        message=message,
        diagnosis=diagnosis if diagnosis_changed else None,
        crash_logs=crash_logs,
        past_pending=pod_past_pending(phase=phase, owner_kinds=owner_kinds),
    )


def owner_kinds(metadata: Mapping[str, Any]) -> tuple[str, ...]:
    """The kinds of the pod's owners (`Job` for a pod a Job created); malformed ones skipped."""
    owners = metadata.get("ownerReferences") or ()
    if not isinstance(owners, list):
        return ()
    return tuple(
        str(owner["kind"]) for owner in owners if isinstance(owner, Mapping) and "kind" in owner
    )


def log_containers(spec: Mapping[str, Any]) -> list[str]:
    """The pod's containers in the order their logs are read: the flow's own container
    first, then the others as the pod lists them."""
    names = [
        str(c["name"])
        for c in spec.get("containers") or ()
        if isinstance(c, Mapping) and isinstance(c.get("name"), str)
    ]
    return sorted(names, key=lambda name: name != FLOW_CONTAINER)
