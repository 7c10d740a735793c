"""The pure pod -> events step: plain dicts in, events out."""

from __future__ import annotations

import contextlib
import copy
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra_observer.errors import InputError
from infra_observer.events.model import limit_problems
from infra_observer.sources.base import Problem, Translation
from infra_observer.sources.kubernetes.translate import PodState, translate

UID = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
FLOW_RUN = "0b5f1a6e-8c8f-4a64-9d0e-3f1f3a0d2b11"
DEPLOYMENT = "1c6f2b7f-9d90-4b75-8e1f-4020b41e3c22"
FLOW = "2d703c80-0ea1-4c86-9f20-5131c52f4d33"
POOL = "3e814d91-1fb2-4d97-a031-6242d6305e44"
OBSERVED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CREATED = "2026-01-01T10:00:00Z"
STARTED = "2026-01-01T10:00:05Z"


def pod(
    phase: str = "Running",
    *,
    restarts: list[int] | None = None,
    labels: dict[str, str] | None = None,
    **status: Any,
) -> dict[str, Any]:
    """A pod as the API returns it (the parts translate reads)."""
    containers = [
        {"name": f"c{i}", "restartCount": count, "state": {}}
        for i, count in enumerate(restarts or [0])
    ]
    return {
        "metadata": {
            "uid": UID,
            "name": "flow-run-abc",
            "namespace": "jobs",
            "creationTimestamp": CREATED,
            "resourceVersion": "42",
            "labels": {"prefect.io/flow-run-id": FLOW_RUN, "prefect.io/flow-run-name": "happy-cat"}
            if labels is None
            else labels,
        },
        "spec": {"containers": [{"name": "c0", "image": "busybox"}]},
        "status": {"phase": phase, "containerStatuses": containers, **status},
    }


def first(
    obj: object, previous: PodState | None = None, *, observed: datetime = OBSERVED
) -> Translation[PodState]:
    return translate(obj, previous, observed=observed)


def state_of(phase: str, restarts: int = 0) -> PodState:
    return PodState(phase, restarts, (phase,))


def expected_id(phase: str, restarts: int) -> uuid.UUID:
    key = json.dumps({"phase": phase, "restart_count": restarts, "uid": UID}, sort_keys=True)
    return uuid.uuid5(uuid.NAMESPACE_URL, key)


# --- phases -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "event"),
    [
        ("Pending", "prefect.kubernetes.pod.pending"),
        ("Running", "prefect.kubernetes.pod.running"),
        ("Succeeded", "prefect.kubernetes.pod.succeeded"),
        ("Failed", "prefect.kubernetes.pod.failed"),
        ("Unknown", "prefect.kubernetes.pod.unknown"),
    ],
)
def test_every_phase_gives_its_event(phase: str, event: str) -> None:
    result = first(pod(phase))
    assert [e.event for e in result.events] == [event]
    produced = result.events[0]
    assert produced.id == expected_id(phase, 0)
    assert produced.resource == {
        "prefect.resource.id": f"prefect.kubernetes.pod.{UID}",
        "prefect.resource.name": "flow-run-abc",
        "kubernetes.namespace": "jobs",
    }
    assert produced.follows is None
    assert produced.payload == {}
    assert limit_problems(produced) == []
    assert result.state == PodState(phase, 0, (phase,))
    assert result.key == UID
    assert result.problems == []


def test_contract_id_vector() -> None:
    result = first(pod("Running"))
    assert result.events[0].id == uuid.UUID("5afc9516-3ead-5831-b721-8c5bdd16dad5")


def test_related_resources_from_every_label() -> None:
    labels = {
        "prefect.io/flow-run-id": FLOW_RUN,
        "prefect.io/flow-run-name": "happy-cat",
        "prefect.io/deployment-id": DEPLOYMENT,
        "prefect.io/deployment-name": "nightly",
        "prefect.io/flow-id": FLOW,
        "prefect.io/flow-name": "etl",
        "prefect.io/work-pool-id": POOL,
        "prefect.io/work-pool-name": "k8s-pool",
        "prefect.io/worker-name": "KubernetesWorker 1234",
    }
    related = first(pod(labels=labels)).events[0].related
    assert list(related) == [
        {
            "prefect.resource.id": f"prefect.flow-run.{FLOW_RUN}",
            "prefect.resource.role": "flow-run",
            "prefect.resource.name": "happy-cat",
        },
        {
            "prefect.resource.id": f"prefect.deployment.{DEPLOYMENT}",
            "prefect.resource.role": "deployment",
            "prefect.resource.name": "nightly",
        },
        {
            "prefect.resource.id": f"prefect.flow.{FLOW}",
            "prefect.resource.role": "flow",
            "prefect.resource.name": "etl",
        },
        {
            "prefect.resource.id": f"prefect.work-pool.{POOL}",
            "prefect.resource.role": "work-pool",
            "prefect.resource.name": "k8s-pool",
        },
        {
            "prefect.resource.id": "prefect.worker.kubernetes.kubernetesworker-1234",
            "prefect.resource.role": "worker",
            "prefect.resource.name": "KubernetesWorker 1234",
            "prefect.worker-type": "kubernetes",
        },
    ]


@pytest.mark.parametrize(
    ("labels", "related_ids", "problem"),
    [
        pytest.param(
            {"prefect.io/flow-run-id": FLOW_RUN},
            [f"prefect.flow-run.{FLOW_RUN}"],
            None,
            id="name-label-missing-keeps-related",
        ),
        pytest.param(
            {"prefect.io/flow-run-id": FLOW_RUN, "prefect.io/deployment-id": "42"},
            [f"prefect.flow-run.{FLOW_RUN}"],
            "prefect.io/deployment-id='42' is not a UUID",
            id="invalid-deployment-id",
        ),
        pytest.param(
            {"prefect.io/flow-run-id": FLOW_RUN, "prefect.io/flow-name": "etl"},
            [f"prefect.flow-run.{FLOW_RUN}"],
            None,
            id="name-without-id-gives-nothing",
        ),
        pytest.param(
            {"prefect.io/flow-run-id": FLOW_RUN.upper()},
            [f"prefect.flow-run.{FLOW_RUN}"],
            None,
            id="upper-case-flow-run-id-is-a-uuid",
        ),
    ],
)
def test_other_labels_missing_or_invalid_still_emit(
    labels: dict[str, str], related_ids: list[str], problem: str | None
) -> None:
    result = first(pod(labels=labels))
    assert len(result.events) == 1
    assert result.skipped is None
    assert [r["prefect.resource.id"] for r in result.events[0].related] == related_ids
    if problem is None:
        assert result.problems == []
    else:
        assert any(problem in p.detail for p in result.problems), result.problems
        assert {p.kind for p in result.problems} == {"label"}


@pytest.mark.parametrize(
    ("labels", "reason", "detail"),
    [
        pytest.param(
            {"prefect.io/flow-run-id": "", "prefect.io/flow-id": FLOW},
            "flow_run_id_empty",
            "prefect.io/flow-run-id is empty",
            id="empty",
        ),
        pytest.param({}, "flow_run_id_empty", "prefect.io/flow-run-id is empty", id="absent"),
        pytest.param(
            {"prefect.io/flow-run-id": "not-a-uuid", "prefect.io/flow-id": FLOW},
            "flow_run_id_not_uuid",
            "prefect.io/flow-run-id='not-a-uuid' is not a UUID",
            id="not-a-uuid",
        ),
        pytest.param(
            {"prefect.io/flow-run-id": FLOW_RUN[:-1]},
            "flow_run_id_not_uuid",
            f"prefect.io/flow-run-id={FLOW_RUN[:-1]!r} is not a UUID",
            id="truncated-uuid",
        ),
    ],
)
@pytest.mark.parametrize("phase", ["Pending", "Running", "Failed"])
def test_an_unusable_flow_run_id_skips_the_pod(
    labels: dict[str, str], reason: str, detail: str, phase: str
) -> None:
    # The page makes the flow-run related resource always present: no event without it.
    result = first(pod(phase, labels=labels))
    assert result.events == []
    assert result.state is None
    assert result.problems == []
    assert result.skipped is not None
    assert result.skipped.reason == reason
    assert detail in result.skipped.detail


def test_a_pod_whose_flow_run_label_turns_unusable_is_skipped_from_then_on() -> None:
    running = first(pod("Running"))
    assert running.state is not None
    relabelled = pod("Succeeded", labels={"prefect.io/flow-run-id": "gone"})
    result = first(relabelled, running.state)
    assert result.events == []
    assert result.skipped is not None
    assert result.skipped.reason == "flow_run_id_not_uuid"


# --- eviction -----------------------------------------------------------------------------


def disruption(reason: str, status: str = "True") -> dict[str, Any]:
    return {"type": "DisruptionTarget", "status": status, "reason": reason}


@pytest.mark.parametrize(
    ("status", "event", "reason"),
    [
        pytest.param({"reason": "Evicted"}, "evicted", "Evicted", id="kubelet-evicted"),
        pytest.param(
            {"conditions": [disruption("EvictionByEvictionAPI")]},
            "evicted",
            "EvictionByEvictionAPI",
            id="eviction-api",
        ),
        pytest.param(
            {
                "conditions": [
                    {"type": "Ready", "status": "False"},
                    disruption("TerminationByKubelet"),
                ]
            },
            "evicted",
            "TerminationByKubelet",
            id="kubelet-termination",
        ),
        pytest.param(
            {"conditions": [disruption("PreemptionByScheduler")]},
            "evicted",
            "PreemptionByScheduler",
            id="preemption",
        ),
        pytest.param(
            {"conditions": [disruption("DeletionByTaintManager")]},
            "evicted",
            "DeletionByTaintManager",
            id="taint-eviction",
        ),
        pytest.param(
            {"conditions": [disruption("EvictionByEvictionAPI", status="False")]},
            "failed",
            None,
            id="condition-false",
        ),
        pytest.param({"conditions": [disruption("DeletionByPodGC")]}, "failed", None, id="pod-gc"),
        pytest.param({"reason": "DeadlineExceeded"}, "failed", None, id="deadline"),
        pytest.param({}, "failed", None, id="plain-failure"),
    ],
)
def test_eviction_rule(status: dict[str, Any], event: str, reason: str | None) -> None:
    produced = first(pod("Failed", **status)).events[0]
    assert produced.event == f"prefect.kubernetes.pod.{event}"
    assert produced.resource.get("kubernetes.reason") == reason
    # The raw phase goes into the id, evicted or not.
    assert produced.id == expected_id("Failed", 0)


@pytest.mark.parametrize("reason", ["Error", "OOMKilled", "ContainerCannotRun"])
def test_container_error_is_failed_not_evicted(reason: str) -> None:
    obj = pod("Failed")
    obj["status"]["containerStatuses"][0]["state"] = {
        "terminated": {"exitCode": 1, "reason": reason, "finishedAt": "2026-01-01T10:01:00Z"}
    }
    produced = first(obj).events[0]
    assert produced.event == "prefect.kubernetes.pod.failed"
    assert "kubernetes.reason" not in produced.resource


def test_disruption_on_a_running_pod_is_not_an_eviction_yet() -> None:
    produced = first(pod("Running", conditions=[disruption("EvictionByEvictionAPI")])).events[0]
    assert produced.event == "prefect.kubernetes.pod.running"


# --- transitions --------------------------------------------------------------------------


def test_sequence_of_transitions() -> None:
    states = [
        ("Pending", [0]),
        ("Pending", [0]),  # duplicate MODIFIED
        ("Running", [0]),
        ("Running", [1]),  # restart
        ("Running", [1]),
        ("Running", [2]),
        ("Failed", [2]),
    ]
    previous: PodState | None = None
    names: list[tuple[str, uuid.UUID]] = []
    for phase, restarts in states:
        result = first(pod(phase, restarts=restarts), previous)
        names.extend((e.event.rsplit(".", 1)[-1], e.id) for e in result.events)
        previous = result.state
    assert names == [
        ("pending", expected_id("Pending", 0)),
        ("running", expected_id("Running", 0)),
        ("running", expected_id("Running", 1)),
        ("running", expected_id("Running", 2)),
        ("failed", expected_id("Failed", 2)),
    ]
    assert len({event_id for _, event_id in names}) == 5


def test_restart_count_sums_containers_not_init_containers() -> None:
    obj = pod("Running", restarts=[2, 3])
    obj["status"]["initContainerStatuses"] = [{"name": "init", "restartCount": 7, "state": {}}]
    result = first(obj)
    assert result.state.restart_count == 5
    assert result.events[0].id == expected_id("Running", 5)


def test_same_state_again_gives_nothing() -> None:
    previous = state_of("Running", 1)
    result = first(pod("Running", restarts=[1]), previous)
    assert result.events == []
    assert result.state == previous
    assert result.unchanged is None


def test_state_already_sent_is_not_sent_again() -> None:
    running = first(pod("Running"))
    unknown = first(pod("Unknown"), running.state)
    back = first(pod("Running"), unknown.state)
    assert [e.event for e in unknown.events] == ["prefect.kubernetes.pod.unknown"]
    assert back.events == []
    assert back.unchanged == "repeated"
    assert (back.state.phase, back.state.restart_count) == ("Running", 0)
    again = first(pod("Unknown"), back.state)
    assert again.events == []
    assert again.unchanged == "repeated"


def test_sent_states_are_forgotten_once_the_restart_count_grows() -> None:
    state = PodState("Running", 3, ("Pending", "Running"))
    result = first(pod("Running", restarts=[4]), state)
    assert result.state == PodState("Running", 4, ("Running",))
    assert len(result.events) == 1


def test_translate_does_not_modify_its_input() -> None:
    obj = pod("Failed", reason="Evicted")
    before = copy.deepcopy(obj)
    first(obj)
    assert obj == before


# --- occurred -----------------------------------------------------------------------------


def with_containers(phase: str, containers: list[dict[str, Any]], **status: Any) -> dict[str, Any]:
    obj = pod(phase, **status)
    obj["status"]["containerStatuses"] = containers
    return obj


def running(started: str) -> dict[str, Any]:
    return {"name": "c", "restartCount": 0, "state": {"running": {"startedAt": started}}}


def terminated(finished: str) -> dict[str, Any]:
    return {"name": "c", "restartCount": 0, "state": {"terminated": {"finishedAt": finished}}}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(pod("Pending"), at(CREATED), id="pending-creation"),
        pytest.param(
            with_containers(
                "Running",
                [running("2026-01-01T10:00:07Z"), running("2026-01-01T10:00:09Z")],
                startTime=STARTED,
            ),
            at("2026-01-01T10:00:09Z"),
            id="running-latest-container-start",
        ),
        pytest.param(
            with_containers("Running", [], startTime=STARTED), at(STARTED), id="running-start-time"
        ),
        pytest.param(
            with_containers(
                "Succeeded",
                [terminated("2026-01-01T10:05:00Z"), terminated("2026-01-01T10:06:00Z")],
                initContainerStatuses=[terminated("2026-01-01T10:00:01Z")],
            ),
            at("2026-01-01T10:06:00Z"),
            id="succeeded-latest-finish",
        ),
        pytest.param(
            with_containers(
                "Failed",
                [{"name": "c", "restartCount": 0, "state": {"waiting": {}}}],
                initContainerStatuses=[terminated("2026-01-01T10:00:30Z")],
            ),
            at("2026-01-01T10:00:30Z"),
            id="failed-init-container-finish",
        ),
        pytest.param(
            with_containers(
                "Failed", [terminated("2026-01-01T10:07:00.123456+02:00")], reason="Evicted"
            ),
            at("2026-01-01T08:07:00.123456+00:00"),
            id="evicted-finish-with-offset",
        ),
        pytest.param(pod("Failed"), OBSERVED, id="failed-no-finish-observed"),
        pytest.param(pod("Unknown"), OBSERVED, id="unknown-observed"),
        pytest.param(
            with_containers("Running", [], startTime=None), OBSERVED, id="running-nothing-observed"
        ),
    ],
)
def test_occurred(obj: dict[str, Any], expected: datetime) -> None:
    produced = first(obj).events[0]
    assert produced.occurred == expected
    assert produced.occurred.tzinfo is not None


def test_bad_timestamp_falls_back_to_observation_and_is_reported() -> None:
    obj = pod("Pending")
    obj["metadata"]["creationTimestamp"] = "yesterday"
    result = first(obj)
    assert result.events[0].occurred == OBSERVED
    assert result.problems == [Problem("timestamp", "timestamp 'yesterday' is not RFC 3339")]


def test_naive_observation_time_is_taken_as_utc() -> None:
    produced = first(pod("Unknown"), observed=datetime(2026, 1, 2, 3, 4, 5)).events[0]
    assert produced.occurred == OBSERVED


# --- malformed pods -----------------------------------------------------------------------


def without(path: str) -> dict[str, Any]:
    obj = pod("Running")
    *parents, last = path.split(".")
    target = obj
    for key in parents:
        target = target[key]
    del target[last]
    return obj


def replaced(path: str, value: Any) -> dict[str, Any]:
    obj = pod("Running")
    *parents, last = path.split(".")
    target = obj
    for key in parents:
        target = target[key]
    target[last] = value
    return obj


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        pytest.param(None, "pod is a NoneType, not an object", id="none"),
        pytest.param([1, 2], "pod is a list, not an object", id="list"),
        pytest.param(without("metadata.uid"), "metadata.uid is missing", id="no-uid"),
        pytest.param(without("metadata.name"), "metadata.name is missing", id="no-name"),
        pytest.param(
            without("metadata.namespace"), "metadata.namespace is missing", id="no-namespace"
        ),
        pytest.param(without("status"), "status.phase is missing", id="no-status"),
        pytest.param(without("status.phase"), "status.phase is missing", id="no-phase"),
        pytest.param(
            replaced("status.phase", "Exploded"), "'Exploded' is not a known phase", id="bad-phase"
        ),
        pytest.param(replaced("metadata", "x"), "pod.metadata is a str", id="metadata-str"),
        pytest.param(replaced("status", 3), "pod.status is a int", id="status-int"),
        pytest.param(
            replaced("status.containerStatuses", {"a": 1}),
            "status.containerStatuses is not a list of objects",
            id="statuses-not-list",
        ),
        pytest.param(
            replaced("status.containerStatuses", [{"restartCount": "many"}]),
            "a restartCount is 'many'",
            id="restart-count-str",
        ),
        pytest.param(
            replaced("status.containerStatuses", [{"restartCount": -1}]),
            "a restartCount is -1",
            id="restart-count-negative",
        ),
        pytest.param(
            replaced("metadata.labels", {"prefect.io/flow-run-id": 5}),
            "metadata.labels has values that are not strings",
            id="label-not-str",
        ),
    ],
)
def test_malformed_pod_is_a_clear_input_error(obj: Any, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(".", r"\.")):
        first(obj)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "metadata",
                    "status",
                    "uid",
                    "name",
                    "namespace",
                    "phase",
                    "labels",
                    "containerStatuses",
                    "restartCount",
                    "state",
                    "running",
                    "terminated",
                    "startedAt",
                    "finishedAt",
                    "conditions",
                    "reason",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@given(garbage=_json)
def test_any_json_gives_a_translation_or_an_input_error(garbage: object) -> None:
    with contextlib.suppress(InputError):
        first(garbage)


@given(
    phase=st.sampled_from(["Pending", "Running", "Succeeded", "Failed", "Unknown"]),
    status=st.dictionaries(
        st.sampled_from(["startTime", "reason", "conditions", "initContainerStatuses"]),
        st.none() | st.integers() | st.text(max_size=5) | st.lists(st.integers(), max_size=2),
    ),
)
def test_odd_optional_fields_never_raise(phase: str, status: dict[str, Any]) -> None:
    result = first(pod(phase, **status))
    assert len(result.events) == 1
    assert limit_problems(result.events[0]) == []


# --- diagnosis and the id scheme ----------------------------------------------------------


def oom_killed() -> dict[str, Any]:
    oom = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
    return with_containers("Failed", [{"name": "c0", "restartCount": 0, "state": oom}])


def pulling(reason: str, phase: str = "Pending") -> dict[str, Any]:
    waiting = {"waiting": {"reason": reason, "message": f"Back-off pulling image: {reason}"}}
    return with_containers(phase, [{"name": "c0", "restartCount": 0, "state": waiting}])


def unschedulable(nodes: int) -> dict[str, Any]:
    message = f"0/{nodes} nodes are available: {nodes} Insufficient memory."
    condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
    return pod("Pending", conditions=[{**condition, "message": message}])


def test_the_diagnosis_is_a_label_of_the_event() -> None:
    failed = first(oom_killed())
    assert failed.events[0].resource["kubernetes.diagnosis"] == "OOMKilled"
    assert failed.state is not None
    assert failed.state.diagnosis == "OOMKilled"
    assert failed.diagnosis_changed
    assert "kubernetes.diagnosis" not in first(pod("Running")).events[0].resource
    evicted = first(pod("Failed", reason="Evicted")).events[0]
    assert evicted.resource["kubernetes.diagnosis"] == "Evicted"
    assert evicted.resource["kubernetes.reason"] == "Evicted"


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (pod("Running"), "20c7b0cb-defc-540e-a066-e7066453e555"),
        (oom_killed(), "9b097519-f7c7-5a0a-92c2-8f7d6a494998"),
    ],
    ids=["running, no diagnosis", "failed, OOMKilled"],
)
def test_prefect_kubernetes_id_vectors(obj: dict[str, Any], expected: str) -> None:
    result = translate(obj, None, observed=OBSERVED, id_scheme="prefect-kubernetes")
    assert result.events[0].id == uuid.UUID(expected)


def test_the_contract_scheme_ignores_the_diagnosis() -> None:
    assert first(oom_killed()).events[0].id == expected_id("Failed", 0)


def test_with_the_contract_scheme_a_diagnosis_change_is_remembered_not_sent() -> None:
    pending = first(pod("Pending"))
    pull = first(pulling("ErrImagePull"), pending.state)
    assert pull.events == []
    assert pull.diagnosis_changed
    assert pull.unchanged is None
    assert pull.state == PodState("Pending", 0, ("Pending",), "ImagePullError")
    backoff = first(pulling("ImagePullBackOff"), pull.state)
    assert (backoff.events, backoff.diagnosis_changed, backoff.state) == ([], False, pull.state)


def test_with_the_prefect_kubernetes_scheme_each_change_of_diagnosis_is_an_event() -> None:
    def step(obj: dict[str, Any], previous: PodState | None) -> Translation[PodState]:
        return translate(obj, previous, observed=OBSERVED, id_scheme="prefect-kubernetes")

    pending = step(pod("Pending"), None)
    pull = step(pulling("ErrImagePull"), pending.state)
    backoff = step(pulling("ImagePullBackOff"), pull.state)
    cleared = step(pod("Pending"), backoff.state)
    assert [e.event for e in pull.events] == ["prefect.kubernetes.pod.pending"]
    assert pull.events[0].resource["kubernetes.diagnosis"] == "ImagePullError"
    assert pull.events[0].id != pending.events[0].id
    assert backoff.events == []  # the same category: no flapping between the two reasons
    assert not backoff.diagnosis_changed
    assert cleared.events == []  # the undiagnosed pending event was sent already
    assert cleared.unchanged == "repeated"
    assert cleared.diagnosis_changed


@pytest.mark.parametrize("scheme", ["contract", "prefect-kubernetes"])
def test_a_change_of_node_count_is_no_change(scheme: Any) -> None:
    before = translate(unschedulable(3), None, observed=OBSERVED, id_scheme=scheme)
    after = translate(unschedulable(4), before.state, observed=OBSERVED, id_scheme=scheme)
    assert before.events[0].resource["kubernetes.diagnosis"] == (
        "Unschedulable.InsufficientResources"
    )
    assert (after.events, after.diagnosis_changed, after.state) == ([], False, before.state)
