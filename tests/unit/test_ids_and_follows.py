from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra_observer.events.follows import FollowsTracker
from infra_observer.events.ids import (
    container_event_id,
    diagnosed_pod_event_id,
    pod_event_id,
    stable_id,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("phase", "diagnosis", "expected"),
    [
        ("Running", None, "20c7b0cb-defc-540e-a066-e7066453e555"),
        ("Failed", "OOMKilled", "9b097519-f7c7-5a0a-92c2-8f7d6a494998"),
    ],
)
def test_pod_id_with_diagnosis_matches_the_prefect_kubernetes_vectors(
    phase: str, diagnosis: str | None, expected: str
) -> None:
    made = diagnosed_pod_event_id(
        uid="a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        phase=phase,
        restart_count=0,
        diagnosis=diagnosis,
    )
    assert made == uuid.UUID(expected)


def test_pod_id_matches_the_contract_vector() -> None:
    event_id = pod_event_id(
        uid="a1b2c3d4-e5f6-7890-abcd-ef1234567890", phase="Running", restart_count=0
    )
    assert event_id == uuid.UUID("5afc9516-3ead-5831-b721-8c5bdd16dad5")


@pytest.mark.parametrize("restart_count", [0, 1, 7, 12345])
@pytest.mark.parametrize("phase", ["Pending", "Running", "Succeeded", "Failed", "Unknown"])
def test_pod_id_is_the_uuid5_of_the_contract_formula(phase: str, restart_count: int) -> None:
    uid = str(uuid.uuid4())
    text = f'{{"phase": "{phase}", "restart_count": {restart_count}, "uid": "{uid}"}}'
    expected = uuid.uuid5(uuid.NAMESPACE_URL, text)
    made = pod_event_id(uid=uid, phase=phase, restart_count=restart_count)
    assert made == expected
    assert (made.version, made.variant, made.is_safe) == (5, uuid.RFC_4122, uuid.SafeUUID.unknown)
    assert str(made) == str(expected)
    assert hash(made) == hash(expected)


@given(uid=st.text(), phase=st.text(), restart_count=st.integers(min_value=0))
def test_pod_id_is_the_contract_formula_for_any_input(
    uid: str, phase: str, restart_count: int
) -> None:
    """The events contract spells the text out: JSON strings, keys in this order."""
    text = (
        f'{{"phase": {json.dumps(phase)}, "restart_count": {restart_count}, '
        f'"uid": {json.dumps(uid)}}}'
    )
    made = pod_event_id(uid=uid, phase=phase, restart_count=restart_count)
    assert made == uuid.uuid5(uuid.NAMESPACE_URL, text)
    assert isinstance(made, uuid.UUID)
    assert (made.version, made.variant) == (5, uuid.RFC_4122)


@pytest.mark.parametrize(
    ("changed", "value"),
    [("phase", "Pending"), ("restart_count", 1), ("uid", "other")],
)
def test_pod_id_changes_with_each_input(changed: str, value: object) -> None:
    base = {"uid": "u", "phase": "Running", "restart_count": 0}
    assert pod_event_id(**base) != pod_event_id(**{**base, changed: value})  # type: ignore[arg-type]


def test_stable_id_ignores_key_order() -> None:
    assert stable_id({"a": 1, "b": "x"}) == stable_id({"b": "x", "a": 1})


def test_container_id_is_deterministic_and_depends_on_state_marks() -> None:
    marks = {"started_at": "2026-01-01T00:00:00Z"}
    first = container_event_id(container_id="c1", status="running", state_marks=marks)
    assert first == container_event_id(container_id="c1", status="running", state_marks=dict(marks))
    restarted = {"started_at": "2026-01-01T00:01:00Z"}
    assert first != container_event_id(container_id="c1", status="running", state_marks=restarted)
    assert first != container_event_id(container_id="c1", status="exited", state_marks=marks)


def _ids(count: int) -> list[uuid.UUID]:
    return [uuid.uuid4() for _ in range(count)]


def test_follows_chains_within_five_minutes_only() -> None:
    tracker = FollowsTracker()
    a, b, c = _ids(3)
    assert tracker.link("r", a, T0) is None
    assert tracker.link("r", b, T0 + timedelta(minutes=4, seconds=59)) == (a, T0)
    assert tracker.link("r", c, T0 + timedelta(minutes=10)) is None


def test_follows_keeps_resources_apart_and_never_points_at_itself() -> None:
    tracker = FollowsTracker()
    a, b = _ids(2)
    assert tracker.link("r1", a, T0) is None
    assert tracker.link("r2", b, T0) is None
    assert tracker.link("r1", a, T0) is None


def test_follows_ignores_an_older_event() -> None:
    tracker = FollowsTracker()
    a, b, c = _ids(3)
    tracker.link("r", a, T0)
    assert tracker.link("r", b, T0 - timedelta(seconds=1)) is None
    assert tracker.link("r", c, T0 + timedelta(seconds=1)) == (a, T0)


def test_follows_memory_is_bounded_and_evictions_are_reported() -> None:
    evicted: list[int] = []
    tracker = FollowsTracker(max_resources=2, on_evict=lambda: evicted.append(1))
    ids = _ids(4)
    for index, event_id in enumerate(ids[:3]):
        tracker.link(f"r{index}", event_id, T0)
    assert len(tracker) == 2
    assert evicted == [1]
    # r0 was the least recently used: its chain starts anew.
    assert tracker.link("r0", ids[3], T0) is None
    assert tracker.link("r2", ids[0], T0) == (ids[2], T0)


def test_an_unlinked_event_is_never_followed() -> None:
    tracker = FollowsTracker()
    a, b, c = _ids(3)
    tracker.link("r", a, T0)
    followed = tracker.link("r", b, T0 + timedelta(seconds=1))
    assert tracker.unlink("r", b, followed)
    assert tracker.link("r", c, T0 + timedelta(seconds=2)) == (a, T0)


def test_unlinking_the_first_event_starts_the_chain_anew() -> None:
    tracker = FollowsTracker()
    a, b = _ids(2)
    assert tracker.unlink("r", a, tracker.link("r", a, T0))
    assert len(tracker) == 0
    assert tracker.link("r", b, T0 + timedelta(seconds=1)) is None


def test_unlink_reports_an_event_that_is_already_followed() -> None:
    tracker = FollowsTracker()
    a, b, c = _ids(3)
    tracker.link("r", a, T0)
    followed = tracker.link("r", b, T0 + timedelta(seconds=1))
    tracker.link("r", c, T0 + timedelta(seconds=2))
    assert not tracker.unlink("r", b, followed)  # c follows b: the caller re-points c
    assert not tracker.unlink("other", b, followed)
    d = uuid.uuid4()
    assert tracker.link("r", d, T0 + timedelta(seconds=3)) == (c, T0 + timedelta(seconds=2))


def test_a_re_pointed_event_follows_only_within_the_window() -> None:
    tracker = FollowsTracker()
    (a,) = _ids(1)
    assert tracker.in_window((a, T0), T0 + timedelta(minutes=4)) == (a, T0)
    assert tracker.in_window((a, T0), T0 + timedelta(minutes=5)) is None
    assert tracker.in_window(None, T0) is None
