"""The pod watch of one scope on the shared list-watch, fed lines no real apiserver would send.

The real stream is exercised in tests/integration/test_kubernetes_source.py; here the
malformed and error lines are, which must be logged and counted without stopping the loop.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
import structlog
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from infra_observer.config import KubernetesSettings
from infra_observer.kubernetes_api import ApiStatusError, GoneError, LineSplitter
from infra_observer.metrics import Metrics
from infra_observer.sources.kubernetes.watch import (
    Scope,
    ScopeWatch,
    label_selector,
    scopes_of,
)
from tests.handoff import RecordingHandoff

UID = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"


def pod(phase: str, version: str, *, restarts: int = 0) -> dict[str, Any]:
    return {
        "metadata": {
            "uid": UID,
            "name": "p",
            "namespace": "jobs",
            "resourceVersion": version,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"prefect.io/flow-run-id": "0b5f1a6e-8c8f-4a64-9d0e-3f1f3a0d2b11"},
        },
        "status": {"phase": phase, "containerStatuses": [{"restartCount": restarts}]},
    }


def line(kind: str, obj: object) -> bytes:
    return orjson.dumps({"type": kind, "object": obj}) + b"\n"


@pytest.fixture
def recorder() -> RecordingHandoff:
    return RecordingHandoff(source="kubernetes")


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def watch(recorder: RecordingHandoff, metrics: Metrics) -> ScopeWatch:
    watch = ScopeWatch(
        scope=Scope("jobs"), settings=KubernetesSettings(), handoff=recorder, metrics=metrics
    )
    watch.list_watch.resource_version = "1"
    return watch


def input_errors(metrics: Metrics, kind: str) -> float:
    labels = {"source": "kubernetes", "kind": kind}
    return metrics.registry.get_sample_value("infra_observer_input_errors_total", labels) or 0.0


async def test_events_advance_the_resource_version_and_the_state(
    watch: ScopeWatch, recorder: RecordingHandoff
) -> None:
    await watch.list_watch.handle_line(line("ADDED", pod("Pending", "5")))
    await watch.list_watch.handle_line(line("MODIFIED", pod("Pending", "6")))
    await watch.list_watch.handle_line(line("MODIFIED", pod("Running", "7")))
    await watch.list_watch.handle_line(line("BOOKMARK", {"metadata": {"resourceVersion": "9"}}))
    assert watch.list_watch.resource_version == "9"
    assert [e.event for e in recorder.events] == [
        "prefect.kubernetes.pod.pending",
        "prefect.kubernetes.pod.running",
    ]
    assert (watch.pods[UID].phase, watch.pods[UID].restart_count) == ("Running", 0)
    await watch.list_watch.handle_line(line("DELETED", pod("Running", "10")))
    assert watch.pods == {}
    assert len(recorder.events) == 2  # nothing new on deletion
    assert watch.list_watch.resource_version == "10"


@pytest.mark.parametrize(("level", "logged"), [(logging.DEBUG, True), (logging.INFO, False)])
async def test_each_change_is_logged_at_debug_level_only(
    level: int, logged: bool, recorder: RecordingHandoff, metrics: Metrics
) -> None:
    configured = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))
    try:
        with capture_logs() as logs:
            watch = ScopeWatch(
                scope=Scope("jobs"),
                settings=KubernetesSettings(),
                handoff=recorder,
                metrics=metrics,
            )
            await watch.list_watch.handle_line(line("ADDED", pod("Pending", "5")))
            await watch.list_watch.handle_line(line("MODIFIED", pod("Running", "6")))
    finally:
        structlog.configure(**configured)
    changes = [(entry["pod"], entry["name"]) for entry in logs if entry["event"] == "pod_event"]
    expected = [
        ("jobs/p", "prefect.kubernetes.pod.pending"),
        ("jobs/p", "prefect.kubernetes.pod.running"),
    ]
    assert changes == (expected if logged else [])
    assert len(recorder.events) == 2


async def test_deleted_with_a_change_reports_it(
    watch: ScopeWatch, recorder: RecordingHandoff
) -> None:
    await watch.list_watch.handle_line(line("ADDED", pod("Running", "5")))
    await watch.list_watch.handle_line(line("DELETED", pod("Succeeded", "6")))
    assert [e.event for e in recorder.events] == [
        "prefect.kubernetes.pod.running",
        "prefect.kubernetes.pod.succeeded",
    ]
    assert watch.pods == {}


@pytest.mark.parametrize(
    "case",
    [
        pytest.param((b"{not json\n", "stream", "undecodable watch event"), id="not-json"),
        pytest.param((b'{"type": "ADDED"}\n', "stream", "undecodable watch event"), id="no-object"),
        pytest.param((b"[1, 2]\n", "stream", "undecodable watch event"), id="not-an-object"),
        pytest.param((line("RESYNC", {}), "stream", "unknown watch event type"), id="odd-type"),
        pytest.param(
            (
                line("ADDED", {"metadata": {"resourceVersion": "7"}}),
                "pod",
                "metadata.uid is missing",
            ),
            id="pod-without-uid",
        ),
        pytest.param(
            (line("BOOKMARK", {"metadata": {}}), "stream", "no metadata.resourceVersion"), id="bm"
        ),
    ],
)
async def test_bad_lines_are_logged_counted_and_skipped(
    watch: ScopeWatch, metrics: Metrics, recorder: RecordingHandoff, case: tuple[bytes, str, str]
) -> None:
    raw, kind, detail = case
    with capture_logs() as logs:
        await watch.list_watch.handle_line(raw)
    assert input_errors(metrics, kind) == 1
    problems = [entry for entry in logs if entry["event"] == "input_error"]
    assert detail in problems[0]["detail"]
    assert problems[0]["kind"] == kind
    assert (problems[0]["source"], problems[0]["scope"]) == ("kubernetes", "jobs")
    # The stream goes on.
    await watch.list_watch.handle_line(line("ADDED", pod("Pending", "8")))
    assert len(recorder.events) == 1
    assert watch.list_watch.resource_version == "8"


async def test_a_bad_pod_still_advances_the_resource_version(watch: ScopeWatch) -> None:
    bad = pod("Exploded", "12")
    await watch.list_watch.handle_line(line("MODIFIED", bad))
    assert watch.list_watch.resource_version == "12"
    assert watch.pods == {}


async def test_bad_labels_are_counted_and_the_event_still_sent(
    watch: ScopeWatch, metrics: Metrics, recorder: RecordingHandoff
) -> None:
    obj = pod("Pending", "3")
    obj["metadata"]["labels"]["prefect.io/flow-id"] = "not-a-uuid"
    with capture_logs() as logs:
        await watch.list_watch.handle_line(line("ADDED", obj))
    assert len(recorder.events) == 1
    assert input_errors(metrics, "label") == 1
    assert any("not a UUID" in entry.get("detail", "") for entry in logs)


async def test_error_410_means_gone(watch: ScopeWatch) -> None:
    status = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    with pytest.raises(GoneError, match="too old"):
        await watch.list_watch.handle_line(line("ERROR", status))


async def test_other_errors_are_api_errors(watch: ScopeWatch) -> None:
    status = {"kind": "Status", "code": 500, "reason": "InternalError", "message": "etcd down"}
    with pytest.raises(ApiStatusError) as raised:
        await watch.list_watch.handle_line(line("ERROR", status))
    assert raised.value.status == 500
    assert "etcd down" in str(raised.value)


def test_selector_and_scopes() -> None:
    assert label_selector(KubernetesSettings()) == "prefect.io/flow-run-id"
    extra = KubernetesSettings(label_selector=" team=data ")
    assert label_selector(extra) == "prefect.io/flow-run-id,team=data"
    assert scopes_of(KubernetesSettings()) == [Scope(None)]
    both = KubernetesSettings(namespaces=["a", "b", "a"])
    assert scopes_of(both) == [Scope("a"), Scope("b")]


def test_lines_are_split_across_chunks() -> None:
    splitter = LineSplitter(limit=100)
    assert splitter.feed(b'{"a":') == []
    assert splitter.feed(b"1}\n{") == [b'{"a":1}']
    assert splitter.feed(b'"b":2}\n\n{"c":3}\n{"d"') == [b'{"b":2}', b'{"c":3}']
    assert splitter.rest() == b'{"d"'
    assert splitter.rest() == b""


def test_a_line_beyond_the_limit_ends_the_watch() -> None:
    splitter = LineSplitter(limit=10)
    splitter.feed(b"0123456")
    with pytest.raises(ValueError, match="longer than 10 bytes"):
        splitter.feed(b"789abc")
