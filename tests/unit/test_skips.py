"""The shared rule for unusable flow-run ids, and its once-per-object log."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from infra_observer.metrics import Metrics
from infra_observer.sources.skips import Skip, SkipLog, flow_run_skip

EMPTY = Skip("flow_run_id_empty", "empty")
NOT_UUID = Skip("flow_run_id_not_uuid", "x")


@pytest.mark.parametrize(
    ("labels", "reason", "detail"),
    [
        ({}, "flow_run_id_empty", "a / b is empty"),
        ({"a": "", "b": ""}, "flow_run_id_empty", "a / b is empty"),
        ({"a": "run-1"}, "flow_run_id_not_uuid", "a='run-1' is not a UUID"),
        ({"a": "", "b": "run-2"}, "flow_run_id_not_uuid", "b='run-2' is not a UUID"),
        ({"a": "run-1", "b": "run-2"}, "flow_run_id_not_uuid", "a='run-1' is not a UUID"),
    ],
)
def test_the_reason_names_the_label_and_its_value(
    labels: dict[str, str], reason: str, detail: str
) -> None:
    skip = flow_run_skip(labels, keys=("a", "b"))
    assert skip.reason == reason
    assert skip.detail.startswith(detail)


def skipped(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "infra_observer_objects_skipped_total", {"source": "docker", "reason": reason}
    )
    return value or 0.0


def test_each_object_is_logged_and_counted_once_per_reason() -> None:
    metrics = Metrics(CollectorRegistry())
    skips = SkipLog(source="docker", metrics=metrics)
    with capture_logs() as logs:
        for _ in range(3):
            skips.report("c1", EMPTY, name="box")
            skips.report("c2", NOT_UUID)
        skips.report("c1", NOT_UUID)
    assert [(e["object"], e["reason"]) for e in logs] == [
        ("c1", "flow_run_id_empty"),
        ("c2", "flow_run_id_not_uuid"),
        ("c1", "flow_run_id_not_uuid"),
    ]
    assert logs[0] == {
        "event": "object_skipped",
        "log_level": "warning",
        "source": "docker",
        "reason": "flow_run_id_empty",
        "detail": "empty",
        "object": "c1",
        "name": "box",
    }
    assert skipped(metrics, "flow_run_id_empty") == 1
    assert skipped(metrics, "flow_run_id_not_uuid") == 2


def test_memory_is_bounded_and_freed_when_an_object_goes() -> None:
    metrics = Metrics(CollectorRegistry())
    skips = SkipLog(source="docker", metrics=metrics, limit=2)
    with capture_logs() as logs:
        for key in ("c1", "c2", "c3"):
            skips.report(key, EMPTY)
        assert len(skips) == 2
        skips.report("c3", EMPTY)  # still remembered: not logged again
        skips.report("c1", EMPTY)  # pushed out by c3: logged again
        skips.forget("c1")
        skips.forget("unknown")
        assert len(skips) == 1
    assert [e["object"] for e in logs] == ["c1", "c2", "c3", "c1"]
    hits = metrics.registry.get_sample_value(
        "infra_observer_bound_hits_total", {"bound": "skipped_objects"}
    )
    assert hits == 2
