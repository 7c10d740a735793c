"""Property tests of the three pure translate steps, fed arbitrary input.

For each source: whatever the object, the step either raises the `InputError` it documents
for bad input, or returns events that the events API accepts (`limit_problems`) and that
match the reference page (`check_against_catalog`). The inputs are built near the real
shapes (so most examples get past the first checks and exercise the builders), with every
field open to odd values: non-canonical UUIDs, empty and huge strings, wrong types, bad
timestamps, unknown phases and actions.

Conformance is asserted where the identifying field (pod uid, container id, task id) has the
shape the real peers give it; with any other value only "no exception but InputError" is.
Every event carries its flow-run related resource, as the page has it always present: an
object whose flow-run id is empty or not a UUID gives no event, and the translation says
why (the same rule on all three sources). Defects these properties found are kept as
regression tests at the end.

tests/unit/test_kubernetes_translate.py already feeds random JSON to the pod translate (no
exception but InputError); here pods are well-formed enough to produce events, whose
conformance is the property.
"""

from __future__ import annotations

import importlib
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from infra_observer.errors import InputError
from infra_observer.events.catalog import ecs_task_id, refs_from_labels, worker_resource
from infra_observer.events.conformance import PLACEHOLDERS, check_against_catalog
from infra_observer.events.model import Event, limit_problems
from infra_observer.sources.docker.translate import ContainerState
from infra_observer.sources.kubernetes.diagnosis import EVICTION_REASONS
from infra_observer.sources.kubernetes.translate import PodState
from infra_observer.sources.kubernetes.wire import Decoder

# The modules themselves: the kubernetes package exports its `translate` function under
# the module's name.
kubernetes = importlib.import_module("infra_observer.sources.kubernetes.translate")
docker = importlib.import_module("infra_observer.sources.docker.translate")
ecs = importlib.import_module("infra_observer.sources.ecs.translate")

EXAMPLES = 1_500
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,  # a shared, noisy machine: no per-example time limit
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
OBSERVED = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


TOKEN = re.compile(PLACEHOLDERS["uid"])
SKIP_REASONS = {"flow_run_id_empty", "flow_run_id_not_uuid"}


def assert_acceptable(events: list[Event]) -> None:
    for event in events:
        assert limit_problems(event) == [], event
        assert check_against_catalog(event) == [], event
        roles = [related.get("prefect.resource.role") for related in event.related]
        assert roles.count("flow-run") == 1, event


def assert_skipped_or_emitted(events: list[Event], skipped: Any) -> None:
    """No event exactly when the object was skipped, with one of the documented reasons."""
    if skipped is not None:
        assert events == []
        assert skipped.reason in SKIP_REASONS


# --- shared value strategies --------------------------------------------------------------

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_json = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
_text = st.text(max_size=30) | st.text(min_size=200, max_size=2_000) | st.just("")


@st.composite
def _uuid_spellings(draw: st.DrawFn) -> str:
    """A UUID as people write it: canonical, upper case, no dashes, braces, URN."""
    value = draw(st.uuids())
    spelling = draw(st.sampled_from(["canonical", "upper", "hex", "braces", "urn"]))
    return {
        "canonical": str(value),
        "upper": str(value).upper(),
        "hex": value.hex,
        "braces": "{" + str(value) + "}",
        "urn": value.urn,
    }[spelling]


_id_values = st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()) | _text
"""The non-canonical spellings of `_uuid_spellings` are a known defect (pinned below)."""
_names = st.sampled_from(["happy-cat", "Happy Cat!", "日本語", "", "-", "x" * 300]) | _text
# A worker name with no ASCII letter or digit has an empty slug: a known defect (pinned).
_worker_names = st.builds("{}-w1".format, _names)
_REF_KEYS = ("flow-run", "deployment", "flow", "work-pool")


@st.composite
def _prefect_labels(draw: st.DrawFn, prefix: str) -> dict[str, str]:
    """Prefect's labels or tags with `prefix` (`prefect.io/` or `io.prefect.`), and others."""
    labels: dict[str, str] = {}
    for key in _REF_KEYS:
        if draw(st.booleans()):
            labels[f"{prefix}{key}-id"] = draw(_id_values)
        if draw(st.booleans()):
            labels[f"{prefix}{key}-name"] = draw(_names)
    if draw(st.booleans()):
        labels[f"{prefix}worker-name"] = draw(_worker_names)
    others = draw(st.dictionaries(st.text(max_size=20), st.text(max_size=20), max_size=4))
    # Other keys never override the Prefect ones drawn above.
    return {**others, **labels}


_timestamps = (
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ).map(lambda moment: moment.isoformat().replace("+00:00", "Z"))
    | st.sampled_from(["0001-01-01T00:00:00Z", "2026-01-01T00:00:00+02:00", "yesterday", ""])
    | _text
)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually the realistic value, sometimes anything JSON can hold."""
    return st.one_of(strategy, strategy, strategy, _json)


# --- Kubernetes ---------------------------------------------------------------------------


_container_reasons = st.sampled_from(
    ["ErrImagePull", "ImagePullBackOff", "CrashLoopBackOff", "OOMKilled", "Error", "Completed"]
)


@st.composite
def _container_status(draw: st.DrawFn) -> dict[str, Any]:
    state = draw(st.sampled_from(["running", "terminated", "waiting"]) | st.text(max_size=8))
    return {
        "name": draw(_maybe(_names)),
        "restartCount": draw(_maybe(st.integers(min_value=0, max_value=10_000))),
        "state": {
            state: {
                "startedAt": draw(_maybe(_timestamps)),
                "finishedAt": draw(_maybe(_timestamps)),
                "reason": draw(_maybe(_container_reasons | _names)),
                "message": draw(_maybe(_names)),
                "exitCode": draw(_maybe(st.integers())),
            }
        },
        "lastState": draw(
            _maybe(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "terminated": st.fixed_dictionaries(
                            {
                                "reason": _maybe(_container_reasons),
                                "exitCode": _maybe(st.integers()),
                            }
                        )
                    },
                )
            )
        ),
    }


_conditions = st.lists(
    st.fixed_dictionaries(
        {
            "type": _maybe(st.sampled_from(["DisruptionTarget", "Ready", "PodScheduled"])),
            "status": _maybe(st.sampled_from(["True", "False", "Unknown"])),
            "reason": _maybe(
                st.sampled_from([*sorted(EVICTION_REASONS), "DeletionByPodGC", "Unschedulable"])
            ),
            "message": _maybe(
                st.sampled_from(
                    [
                        "0/3 nodes are available: 3 Insufficient memory.",
                        "0/1 nodes are available: 1 node(s) had untolerated taint {a: b}.",
                    ]
                )
            ),
            "lastTransitionTime": _maybe(_timestamps),
        }
    ),
    max_size=3,
)


@st.composite
def _pods(draw: st.DrawFn) -> dict[str, Any]:
    labels = draw(_prefect_labels("prefect.io/"))
    status: dict[str, Any] = {
        "phase": draw(
            st.sampled_from(["Pending", "Running", "Succeeded", "Failed", "Unknown"])
            | _maybe(st.text(max_size=10))
        ),
        "containerStatuses": draw(_maybe(st.lists(_container_status(), max_size=3))),
        "initContainerStatuses": draw(_maybe(st.lists(_container_status(), max_size=2))),
        "conditions": draw(_maybe(_conditions)),
        "startTime": draw(_maybe(_timestamps)),
    }
    if draw(st.booleans()):
        status["reason"] = draw(_maybe(st.sampled_from(["Evicted", "DeadlineExceeded"])))
    return {
        "metadata": {
            "uid": draw(st.uuids().map(str) | _maybe(_text)),
            "name": draw(_maybe(_names)),
            "namespace": draw(_maybe(_names)),
            "creationTimestamp": draw(_maybe(_timestamps)),
            "labels": draw(_maybe(st.just(labels))),
        },
        "status": draw(_maybe(st.just(status))),
    }


_pod_states = st.none() | st.builds(
    kubernetes.PodState,
    phase=st.sampled_from(["Pending", "Running", "Succeeded", "Failed", "Unknown"]),
    restart_count=st.integers(min_value=0, max_value=5),
    sent=st.lists(
        st.sampled_from(["Pending", "Running", "Succeeded", "Failed", "Unknown"]), max_size=5
    ).map(tuple),
    diagnosis=st.none() | st.sampled_from(["ImagePullError", "OOMKilled", "CrashLoopBackOff"]),
)


@PROPERTY
@given(pod=_pods(), previous=_pod_states)
def test_any_pod_gives_acceptable_events_or_an_input_error(
    pod: dict[str, Any], previous: PodState | None
) -> None:
    try:
        result = kubernetes.translate(pod, previous, observed=OBSERVED)
    except InputError:
        return
    assert_skipped_or_emitted(result.events, result.skipped)
    if TOKEN.fullmatch(result.uid):
        assert_acceptable(result.events)


# --- Docker -------------------------------------------------------------------------------

_container_ids = (
    st.text(alphabet="0123456789abcdef", min_size=64, max_size=64) | _text | _maybe(_text)
)
_actions = st.sampled_from(
    [
        "create",
        "start",
        "restart",
        "pause",
        "unpause",
        "die",
        "stop",
        "kill",
        "oom",
        "destroy",
        "exec_start: sh -c true",
        "health_status: healthy",
        "rename",
    ]
) | _maybe(st.text(max_size=12))


@st.composite
def _docker_events(draw: st.DrawFn) -> dict[str, Any]:
    attributes: dict[str, Any] = dict(draw(_prefect_labels("io.prefect.")))
    attributes["name"] = draw(_maybe(_names))
    attributes.update(draw(st.dictionaries(st.text(max_size=8), _json, max_size=2)))
    return {
        "Type": draw(st.sampled_from(["container", "container", "network"]) | _json),
        "Action": draw(_actions),
        "Actor": draw(_maybe(st.just({"ID": draw(_container_ids), "Attributes": attributes}))),
        "time": draw(_maybe(st.integers(min_value=-1, max_value=2**40))),
        "timeNano": draw(_maybe(st.integers(min_value=-1, max_value=2**62))),
    }


@st.composite
def _inspected_containers(draw: st.DrawFn, container_id: str) -> dict[str, Any]:
    labels = draw(_prefect_labels(draw(st.sampled_from(["io.prefect.", "prefect.io/"]))))
    return {
        "Id": draw(st.just(container_id) | _maybe(st.just(container_id))),
        "Name": draw(_maybe(_names.map(lambda name: "/" + name))),
        "Created": draw(_maybe(_timestamps)),
        "State": draw(
            _maybe(
                st.fixed_dictionaries(
                    {
                        "Status": st.sampled_from(docker.CONTAINER_STATUSES)
                        | _maybe(st.text(max_size=8)),
                        "StartedAt": _maybe(_timestamps),
                        "FinishedAt": _maybe(_timestamps),
                    }
                )
            )
        ),
        "Config": draw(_maybe(st.just({"Labels": draw(_maybe(st.just(labels)))}))),
    }


_container_states = st.none() | st.builds(
    docker.ContainerState,
    container_id=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
    | _text.filter(bool),
    name=st.none() | _names,
    labels=_prefect_labels("io.prefect."),
    status=st.sampled_from(docker.CONTAINER_STATUSES),
    marks=st.dictionaries(
        st.sampled_from(["started_at", "finished_at", "paused_at", "unpaused_at"]),
        st.integers(min_value=0, max_value=2**62).map(str),
    ),
)
_docker_workers = st.sampled_from(["docker-worker", "Worker 1", "host.example.com"]) | (
    _worker_names
)
_nanos = st.integers(min_value=1, max_value=2**62)


@PROPERTY
@given(
    raw=_docker_events(),
    data=st.data(),
    previous=_container_states,
    worker_name=_docker_workers,
)
def test_any_docker_event_gives_acceptable_events_or_an_input_error(
    raw: dict[str, Any],
    data: st.DataObject,
    previous: ContainerState | None,
    worker_name: str,
) -> None:
    """The stream's path: parse the line, inspect when needed, translate."""
    try:
        parsed = docker.parse_event_line(json.dumps(raw))
        if parsed is None:
            return
        inspected = None
        if docker.needs_inspect(parsed) and data.draw(st.booleans()):
            inspected = docker.parse_inspect(data.draw(_inspected_containers(parsed.container_id)))
    except InputError:
        return
    result = docker.translate_event(
        parsed, inspected=inspected, previous=previous, worker_name=worker_name
    )
    assert_skipped_or_emitted(result.events, result.skipped)
    if TOKEN.fullmatch(parsed.container_id):
        assert_acceptable(result.events)


@PROPERTY
@given(
    data=st.data(),
    container_id=_container_ids,
    previous=_container_states,
    worker_name=_docker_workers,
    observed=_nanos,
)
def test_any_listed_container_gives_acceptable_events_or_an_input_error(
    data: st.DataObject,
    container_id: str,
    previous: ContainerState | None,
    worker_name: str,
    observed: int,
) -> None:
    """The listing's path (after every reconnection): inspect, reconcile, and vanish."""
    try:
        inspected = docker.parse_inspect(data.draw(_inspected_containers(container_id)))
    except InputError:
        inspected = None
    if inspected is not None:
        result = docker.reconcile(
            inspected, previous=previous, worker_name=worker_name, observed=observed
        )
        assert_skipped_or_emitted(result.events, result.skipped)
        if TOKEN.fullmatch(inspected.container_id):
            assert_acceptable(result.events)
    if previous is not None:
        gone = docker.vanished(previous, worker_name=worker_name, observed=observed)
        assert_skipped_or_emitted(gone.events, gone.skipped)
        if TOKEN.fullmatch(previous.container_id):
            assert_acceptable(gone.events)


# --- ECS ----------------------------------------------------------------------------------

_task_arns = (
    st.builds(
        "arn:aws:ecs:{}:123456789012:task/{}/{}".format,
        st.sampled_from(["us-east-1", "eu-west-3"]),
        st.sampled_from(["prod", "my-cluster"]),
        st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
    )
    | _text
)
_statuses = st.sampled_from([status.upper() for status in ecs.ECS_TASK_STATUSES]) | _maybe(
    st.sampled_from(["running", "Stopped", "EXPLODED", ""])
)


@st.composite
def _envelopes(draw: st.DrawFn) -> dict[str, Any]:
    detail = {
        "taskArn": draw(_maybe(_task_arns)),
        "clusterArn": draw(_maybe(st.none() | _text)),
        "taskDefinitionArn": draw(_maybe(st.none() | _text)),
        "lastStatus": draw(_statuses),
        "version": draw(_maybe(st.none() | st.integers(min_value=-1))),
    }
    return {
        "version": "0",
        "id": draw(_maybe(_uuid_spellings())),
        "detail-type": draw(
            st.sampled_from([ecs.DETAIL_TYPE, ecs.DETAIL_TYPE, "EC2 Instance State-change"])
        ),
        "source": draw(st.sampled_from([ecs.EVENT_SOURCE, ecs.EVENT_SOURCE, "aws.ec2"])),
        "time": draw(_maybe(_timestamps)),
        "detail": draw(_maybe(st.just(detail))),
    }


_bodies = (
    _envelopes().map(json.dumps)
    | _json.map(json.dumps)
    | st.binary(max_size=40)
    | st.text(max_size=40)
)


@PROPERTY
@given(
    body=_bodies,
    tags=_prefect_labels("prefect.io/"),
    with_flow_run=st.booleans(),
    flow_run=_id_values,
    last_version=st.none() | st.integers(min_value=0, max_value=10),
)
@example(
    body=json.dumps(
        {
            "id": str(uuid.uuid4()),
            "detail-type": ecs.DETAIL_TYPE,
            "source": ecs.EVENT_SOURCE,
            "time": "2026-01-01T00:00:00Z",
            "detail": {"taskArn": "arn:aws:ecs:us-east-1:1:task/c/abc", "lastStatus": "RUNNING"},
        }
    ),
    tags={},
    with_flow_run=True,
    flow_run=str(uuid.uuid4()),
    last_version=None,
)
def test_any_sqs_body_gives_acceptable_events_or_an_input_error(
    body: bytes | str,
    tags: dict[str, str],
    with_flow_run: bool,
    flow_run: str,
    last_version: int | None,
) -> None:
    """The queue's path: parse the body, then decide with the task's tags."""
    try:
        change = ecs.parse_message(body)
    except InputError:
        return
    if with_flow_run:
        tags = {**tags, ecs.FLOW_RUN_TAG: flow_run}
    result = ecs.translate(change, last_version, tags=tags)
    assert len(result.events) <= 1
    outcomes = [bool(result.events), result.skipped is not None, result.unchanged is not None]
    assert outcomes.count(True) == 1, "an event, a skip or a reason for none: exactly one"
    if result.events and TOKEN.fullmatch(ecs_task_id(change.task_arn)):
        assert_acceptable(result.events)


# --- defects the properties found, kept as regression tests ------------------------------


@pytest.mark.parametrize("spelling", ["hex", "braces", "urn"])
def test_non_canonical_uuid_labels_give_canonical_related_ids(spelling: str) -> None:
    value = uuid.uuid4()
    text = {"hex": value.hex, "braces": "{" + str(value) + "}", "urn": value.urn}[spelling]
    refs, problems = refs_from_labels({"prefect.io/flow-run-id": text})
    assert refs.flow_run_id == str(value)
    assert problems == []


def test_a_worker_name_without_ascii_letters_still_has_a_slug() -> None:
    labels = worker_resource(worker_type="docker", worker_name="日本語")
    assert not labels["prefect.resource.id"].endswith(".")


def _pod_with(labels: dict[str, str]) -> list[Event] | str:
    pod = {
        "metadata": {"uid": "u1", "name": "p", "namespace": "n", "labels": labels},
        "status": {"phase": "Running"},
    }
    result = kubernetes.translate(pod, None, observed=OBSERVED)
    return result.skipped.reason if result.skipped else result.events


def _container_with(labels: dict[str, str]) -> list[Event] | str:
    inspected = docker.Inspected("c" * 64, "box", labels, "running", 1, 2, None)
    result = docker.reconcile(inspected, previous=None, worker_name="w", observed=3)
    return result.skipped.reason if result.skipped else result.events


def _task_with(tags: dict[str, str]) -> list[Event] | str:
    body = {
        "id": str(uuid.uuid4()),
        "detail-type": ecs.DETAIL_TYPE,
        "source": ecs.EVENT_SOURCE,
        "time": "2026-01-01T00:00:00Z",
        "detail": {"taskArn": "arn:aws:ecs:r:1:task/c/abc", "lastStatus": "RUNNING"},
    }
    result = ecs.translate(ecs.parse_message(json.dumps(body)), None, tags=tags)
    return result.skipped.reason if result.skipped else result.events


@pytest.mark.parametrize(
    ("value", "outcome"),
    [
        ("", "flow_run_id_empty"),
        ("not-a-uuid", "flow_run_id_not_uuid"),
        ("42", "flow_run_id_not_uuid"),
        (str(uuid.UUID(int=7))[:-1], "flow_run_id_not_uuid"),
        (str(uuid.UUID(int=7)), "emitted"),
        (str(uuid.UUID(int=7)).upper(), "emitted"),
    ],
)
@pytest.mark.parametrize(
    ("translate", "key"),
    [
        (_pod_with, "prefect.io/flow-run-id"),
        (_container_with, "io.prefect.flow-run-id"),
        (_container_with, "prefect.io/flow-run-id"),
        (_task_with, "prefect.io/flow-run-id"),
    ],
    ids=["pod", "container-reverse-dns", "container", "task"],
)
def test_one_flow_run_id_rule_for_every_source(
    translate: Any, key: str, value: str, outcome: str
) -> None:
    """Empty or not a UUID: no event, and why; a UUID: an event with its flow run."""
    result = translate({key: value, "prefect.io/flow-id": str(uuid.UUID(int=8))})
    if outcome != "emitted":
        assert result == outcome
        return
    (event,) = result
    flow_run = [r for r in event.related if r["prefect.resource.role"] == "flow-run"]
    assert [r["prefect.resource.id"] for r in flow_run] == [f"prefect.flow-run.{uuid.UUID(int=7)}"]


@pytest.mark.parametrize("uid", ["a b", "-x", "é"])
def test_a_pod_uid_that_is_not_a_token_is_an_input_error(uid: str) -> None:
    pod = {
        "metadata": {"uid": uid, "name": "p", "namespace": "n", "labels": {}},
        "status": {"phase": "Pending"},
    }
    with pytest.raises(InputError):
        kubernetes.translate(pod, None, observed=OBSERVED)


# --- the Kubernetes source's decoder ------------------------------------------------------


def _outcome(pod: object, previous: PodState | None, scheme: Any) -> object:
    try:
        result = kubernetes.translate(pod, previous, observed=OBSERVED, id_scheme=scheme)
    except InputError as exc:
        return ("InputError", str(exc))
    return result


@PROPERTY
@given(
    pod=_pods(),
    previous=_pod_states,
    kind=st.sampled_from(["ADDED", "MODIFIED"]),
    scheme=st.sampled_from(["contract", "prefect-kubernetes"]),
)
def test_decoding_only_the_read_fields_translates_like_a_full_decode(
    pod: dict[str, Any], previous: PodState | None, kind: str, scheme: str
) -> None:
    # Fields translate never reads ride along, to be skipped by the decoder.
    pod = {**pod, "spec": {"containers": [{"name": "c", "image": "x"}]}, "kind": "Pod"}
    line = json.dumps({"type": kind, "object": pod}).encode()
    try:
        full = orjson.loads(line)
    except orjson.JSONDecodeError:
        full = None
    # Integers beyond 64 bits (no apiserver sends them): orjson refuses them or makes
    # floats of them, where the decoder keeps them exact; only error texts would differ.
    assume(full is not None and json.dumps(full) == json.dumps(json.loads(line)))
    decoded = Decoder().watch_line(line)
    assert decoded["type"] == kind
    assert _outcome(decoded["object"], previous, scheme) == _outcome(
        full["object"], previous, scheme
    )
