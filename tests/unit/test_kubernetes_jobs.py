"""A Job's outcome by the Job controller's rules, and when it crashes its flow run."""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra_observer.errors import InputError
from infra_observer.sources.kubernetes.jobs import JobOutcome, crash_message, read_job


def job(
    *, spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {
            "uid": "6f1c1e44-2d1f-4c53-9c55-5f3b1a2c7d10",
            "namespace": "jobs",
            "name": "run-1",
            "labels": {"prefect.io/flow-run-id": "0b5f1a6e-8c8f-4a64-9d0e-3f1f3a0d2b11"},
        },
        "spec": spec or {},
        "status": status or {},
    }


def condition(
    kind: str, *, reason: str = "", message: str = "", status: str = "True"
) -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


class Row(NamedTuple):
    name: str
    spec: dict[str, Any]
    status: dict[str, Any]
    outcome: JobOutcome
    reason: str | None = None


ROWS = (
    Row(name="just created", spec={}, status={}, outcome="active"),
    Row(
        name="a pod failed, the Job retries",
        spec={},
        status={"failed": 3, "active": 1},
        outcome="active",
    ),
    Row(name="at the default limit", spec={}, status={"failed": 6}, outcome="active"),
    Row(
        name="past the default limit",
        spec={},
        status={"failed": 7},
        outcome="failed",
        reason="BackoffLimitExceeded",
    ),
    Row(
        name="no retries",
        spec={"backoffLimit": 0},
        status={"failed": 1},
        outcome="failed",
        reason="BackoffLimitExceeded",
    ),
    Row(
        name="Failed condition",
        spec={},
        status={
            "failed": 1,
            "conditions": [condition("Failed", reason="DeadlineExceeded", message="too long")],
        },
        outcome="failed",
        reason="DeadlineExceeded",
    ),
    Row(
        name="FailureTarget before Failed",
        spec={},
        status={"conditions": [condition("FailureTarget", reason="PodFailurePolicy")]},
        outcome="failed",
        reason="PodFailurePolicy",
    ),
    Row(
        name="a Failed condition that is not true",
        spec={},
        status={"conditions": [condition("Failed", reason="BackoffLimitExceeded", status="False")]},
        outcome="active",
    ),
    Row(
        name="Complete",
        spec={},
        status={"conditions": [condition("Complete")]},
        outcome="succeeded",
    ),
    Row(
        name="SuccessCriteriaMet",
        spec={},
        status={"conditions": [condition("SuccessCriteriaMet")]},
        outcome="succeeded",
    ),
    Row(
        name="succeeded before the condition", spec={}, status={"succeeded": 1}, outcome="succeeded"
    ),
    Row(
        name="more completions asked",
        spec={"completions": 3},
        status={"succeeded": 2},
        outcome="active",
    ),
    Row(
        name="success wins over a failed pod count",
        spec={"backoffLimit": 0},
        status={"failed": 1, "conditions": [condition("Complete")]},
        outcome="succeeded",
    ),
)


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_outcome_by_the_job_controller_rules(row: Row) -> None:
    view = read_job(job(spec=row.spec, status=row.status))
    assert (view.outcome, view.reason) == (row.outcome, row.reason)


def test_a_failed_job_crashes_its_run_with_the_controller_reason_and_message() -> None:
    failed = read_job(
        job(
            status={
                "conditions": [
                    condition(
                        "Failed",
                        reason="DeadlineExceeded",
                        message="Job was active longer\n than specified",
                    )
                ]
            }
        )
    )
    assert crash_message(failed, deleted=False) == (
        "Job jobs/run-1 failed (DeadlineExceeded): Job was active longer than specified"
    )
    assert crash_message(failed, deleted=True) == crash_message(failed, deleted=False)


def test_a_job_deleted_before_it_succeeded_crashes_its_run() -> None:
    active = read_job(job(status={"active": 1}))
    assert crash_message(active, deleted=True) == "Job jobs/run-1 was deleted before it succeeded"
    assert crash_message(active, deleted=False) is None


def test_a_succeeded_job_never_crashes_its_run() -> None:
    done = read_job(job(status={"succeeded": 1}))
    assert crash_message(done, deleted=True) is None
    assert crash_message(done, deleted=False) is None


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ([], "must be an object"),
        ({"metadata": {"namespace": "jobs", "name": "x"}}, "metadata.uid"),
        (job(spec={"backoffLimit": "six"}), "backoffLimit is not a count"),
        (job(status={"failed": -1}), "failed is not a count"),
        (job(status={"conditions": {"type": "Failed"}}), "conditions is not a list"),
        ({**job(), "status": "Failed"}, "status is not an object"),
    ],
)
def test_a_malformed_job_is_an_input_error_that_says_what(raw: object, says: str) -> None:
    with pytest.raises(InputError, match=says):
        read_job(raw)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(spec=JSON, status=JSON)
def test_any_spec_and_status_give_an_outcome_or_an_input_error(
    spec: object, status: object
) -> None:
    raw = {**job(), "spec": spec, "status": status}
    try:
        view = read_job(raw)
    except InputError:
        return
    assert view.outcome in ("active", "succeeded", "failed")
