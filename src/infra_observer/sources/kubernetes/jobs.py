"""A flow run's Kubernetes Job: whether it is still running, succeeded or failed, and why.

Pure functions over the Job as the API sends it (a dict). The rules follow the Job
controller: the `Complete` / `SuccessCriteriaMet` and `Failed` / `FailureTarget` conditions
decide once written; before the controller writes them, more failed pods than
`spec.backoffLimit` (default 6) is a failure, and `spec.completions` (default 1) succeeded
pods a success. A pod that fails while the Job will retry it is not the Job's failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from infra_observer.errors import InputError
from infra_observer.sources.base import one_line

JobOutcome = Literal["active", "succeeded", "failed"]

DEFAULT_BACKOFF_LIMIT: Final = 6
_SUCCESS_CONDITIONS: Final = ("Complete", "SuccessCriteriaMet")
# FailureTarget comes first: the controller writes it as soon as it decides, and Failed
# only once the Job's last pods have terminated.
_FAILURE_CONDITIONS: Final = ("FailureTarget", "Failed")


@dataclass(frozen=True, slots=True)
class JobView:
    """What the lifecycle needs of one Job."""

    uid: str
    namespace: str
    name: str
    labels: Mapping[str, str]
    outcome: JobOutcome
    reason: str | None = None
    """The controller's reason for a failure (`BackoffLimitExceeded`, `DeadlineExceeded`…)."""
    message: str | None = None


def read_job(job: object) -> JobView:
    """The Job's identity and outcome; raises `InputError` naming what is wrong."""
    if not isinstance(job, Mapping):
        raise InputError(f"a Job must be an object, got {type(job).__name__}")
    metadata = _mapping(job, "metadata")
    labels = metadata.get("labels") or {}
    if not isinstance(labels, Mapping):
        raise InputError("Job metadata.labels is not an object")
    outcome, reason, message = _outcome(_mapping(job, "spec"), _mapping(job, "status"))
    return JobView(
        uid=_text(metadata, "uid"),
        namespace=_text(metadata, "namespace"),
        name=_text(metadata, "name"),
        labels={str(k): str(v) for k, v in labels.items()},
        outcome=outcome,
        reason=reason,
        message=message,
    )


def crash_message(job: JobView, *, deleted: bool) -> str | None:
    """Why the Job crashed its flow run, or None when it did not.

    A failed Job crashes its run; so does one deleted before it succeeded (someone removed
    it, or a TTL did so before the daemon saw the failure).
    """
    where = f"Job {job.namespace}/{job.name}"
    if job.outcome == "failed":
        detail = f": {one_line(job.message)}" if job.message else ""
        return f"{where} failed ({job.reason or 'Failed'}){detail}"
    if deleted and job.outcome == "active":
        return f"{where} was deleted before it succeeded"
    return None


def _outcome(
    spec: Mapping[str, Any], status: Mapping[str, Any]
) -> tuple[JobOutcome, str | None, str | None]:
    conditions = _true_conditions(status)
    for kind in _SUCCESS_CONDITIONS:
        if kind in conditions:
            return "succeeded", None, None
    for kind in _FAILURE_CONDITIONS:
        if kind in conditions:
            reason, message = conditions[kind]
            return "failed", reason or kind, message
    backoff_limit = _count(spec, "backoffLimit", default=DEFAULT_BACKOFF_LIMIT)
    failed = _count(status, "failed", default=0)
    if failed > backoff_limit:
        message = f"{failed} pods failed, more than the backoff limit of {backoff_limit}"
        return "failed", "BackoffLimitExceeded", message
    if _count(status, "succeeded", default=0) >= _count(spec, "completions", default=1):
        return "succeeded", None, None
    return "active", None, None


def _true_conditions(status: Mapping[str, Any]) -> dict[str, tuple[str | None, str | None]]:
    found: dict[str, tuple[str | None, str | None]] = {}
    conditions = status.get("conditions") or []
    if not isinstance(conditions, list):
        raise InputError("Job status.conditions is not a list")
    for condition in conditions:
        if isinstance(condition, Mapping) and condition.get("status") == "True":
            reason, message = condition.get("reason"), condition.get("message")
            found[str(condition.get("type"))] = (
                reason if isinstance(reason, str) else None,
                message if isinstance(message, str) else None,
            )
    return found


def _count(parent: Mapping[str, Any], key: str, *, default: int) -> int:
    value = parent.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"Job {key} is not a count: {value!r}")
    return value


def _mapping(parent: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = parent.get(key) or {}
    if not isinstance(value, Mapping):
        raise InputError(f"Job {key} is not an object")
    return value


def _text(parent: Mapping[str, Any], key: str) -> str:
    value = parent.get(key)
    if not isinstance(value, str) or not value:
        raise InputError(f"Job metadata.{key} is missing")
    return value
