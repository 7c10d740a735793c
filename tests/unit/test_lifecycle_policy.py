"""The rules for proposing a state, over every state type Prefect has; and a pending
proposal still queued, withdrawn once the infrastructure is past pending."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from infra_observer.config import LifecycleSettings, PrefectSettings
from infra_observer.lifecycle.policy import (
    FINAL_STATE_TYPES,
    INFRASTRUCTURE_PENDING,
    ProposalKind,
    admits,
)
from infra_observer.lifecycle.worker import Lifecycle
from infra_observer.metrics import Metrics
from infra_observer.observations import Diagnosis, Observation
from infra_observer.prefect_api.client import PrefectApi

STATE_TYPES = (
    "SCHEDULED",
    "PENDING",
    "RUNNING",
    "PAUSED",
    "CANCELLING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "CRASHED",
)


class Row(NamedTuple):
    state_type: str
    state_name: str
    pending: bool
    crashed: bool


ROWS = (
    Row(state_type="SCHEDULED", state_name="Scheduled", pending=True, crashed=False),
    Row(state_type="SCHEDULED", state_name="Late", pending=True, crashed=False),
    Row(state_type="SCHEDULED", state_name="AwaitingRetry", pending=True, crashed=False),
    Row(state_type="PENDING", state_name="Pending", pending=True, crashed=True),
    Row(state_type="PENDING", state_name=INFRASTRUCTURE_PENDING, pending=False, crashed=True),
    Row(state_type="RUNNING", state_name="Running", pending=False, crashed=True),
    Row(state_type="RUNNING", state_name="Retrying", pending=False, crashed=True),
    Row(state_type="PAUSED", state_name="Paused", pending=False, crashed=False),
    Row(state_type="PAUSED", state_name="Suspended", pending=False, crashed=False),
    Row(state_type="CANCELLING", state_name="Cancelling", pending=False, crashed=False),
    Row(state_type="COMPLETED", state_name="Completed", pending=False, crashed=False),
    Row(state_type="FAILED", state_name="Failed", pending=False, crashed=False),
    Row(state_type="CANCELLED", state_name="Cancelled", pending=False, crashed=False),
    Row(state_type="CRASHED", state_name="Crashed", pending=False, crashed=False),
)


@pytest.mark.parametrize("row", ROWS, ids=lambda row: f"{row.state_type}/{row.state_name}")
def test_each_state_admits_what_the_rules_say(row: Row) -> None:
    assert admits("pending", state_type=row.state_type, state_name=row.state_name) is row.pending
    assert admits("crashed", state_type=row.state_type, state_name=row.state_name) is row.crashed


def test_the_table_covers_every_state_type() -> None:
    assert {row.state_type for row in ROWS} == set(STATE_TYPES)


@given(
    kind=st.sampled_from(["pending", "crashed"]),
    state_type=st.sampled_from(sorted(FINAL_STATE_TYPES)),
    state_name=st.text(max_size=30),
)
def test_a_final_run_admits_nothing(kind: ProposalKind, state_type: str, state_name: str) -> None:
    assert not admits(kind, state_type=state_type, state_name=state_name)


@pytest.mark.parametrize("kind", ["pending", "crashed"])
def test_a_run_without_a_state_is_left_to_the_server(kind: ProposalKind) -> None:
    assert admits(kind, state_type=None, state_name=None)


RUN = uuid.UUID("5d0c7a52-6a8e-4a36-9f1e-0d3f6b8a2c41")
OTHER = uuid.UUID("9a1e0b6f-3c2d-4e58-8b7a-61f0d2c4e913")
PULL = Diagnosis("ImagePullError", "ERROR", "Image x cannot be pulled.", "Fix the image.")
LOOP = Diagnosis("CrashLoopBackOff", "ERROR", "Container keeps failing.", "Read its logs.")
PENDING = Observation(RUN, "kubernetes", wants="pending", message="Pod jobs/run-1 is pending.")
RUNNING = Observation(RUN, "kubernetes", past_pending=True)


class Queue(NamedTuple):
    name: str
    observations: tuple[Observation, ...]
    queued: ProposalKind | None
    """What the run's queued work proposes once every observation is taken."""
    waiting: int
    withdrawn: int


QUEUES = (
    Queue("pending, then its pod runs: withdrawn", (PENDING, RUNNING), None, 0, 1),
    Queue(
        "a diagnosis to write stays when the proposal goes",
        (Observation(RUN, "kubernetes", wants="pending", diagnosis=PULL), RUNNING),
        None,
        1,
        1,
    ),
    Queue(
        "a crash is never withdrawn",
        (Observation(RUN, "kubernetes", wants="crashed"), RUNNING),
        "crashed",
        1,
        0,
    ),
    Queue("nothing queued: nothing withdrawn", (RUNNING,), None, 0, 0),
    Queue(
        "running with a new diagnosis: it is written",
        (Observation(RUN, "kubernetes", diagnosis=LOOP, past_pending=True),),
        None,
        1,
        0,
    ),
    Queue(
        "withdrawn, then pending again: proposed again",
        (PENDING, RUNNING, PENDING),
        "pending",
        1,
        1,
    ),
    Queue(
        "another run's pending stays",
        (Observation(OTHER, "kubernetes", wants="pending"), RUNNING),
        None,
        1,
        0,
    ),
)


@pytest.fixture
async def idle() -> AsyncIterator[tuple[Lifecycle, Metrics]]:
    """A lifecycle whose `run` is never started: its queue only grows and shrinks by `observe`,
    and nothing is ever sent to the address it is given."""
    api = PrefectApi.from_settings(
        PrefectSettings(api_url="http://127.0.0.1:9/api"), timeout_seconds=1
    )
    metrics = Metrics(CollectorRegistry())
    lifecycle = Lifecycle(
        api=api,
        metrics=metrics,
        settings=LifecycleSettings(),
    )
    yield lifecycle, metrics
    await api.aclose()


@pytest.mark.parametrize("row", QUEUES, ids=lambda row: row.name)
def test_a_queued_pending_proposal_is_withdrawn_once_past_pending(
    row: Queue, idle: tuple[Lifecycle, Metrics]
) -> None:
    lifecycle, metrics = idle
    for observation in row.observations:
        lifecycle.observe(observation)
    assert lifecycle.queued_proposal(RUN) == row.queued
    assert lifecycle.waiting == row.waiting
    labels = {"source": "kubernetes", "state": INFRASTRUCTURE_PENDING, "outcome": "withdrawn"}
    withdrawn = metrics.registry.get_sample_value(
        "infra_observer_lifecycle_proposals_total", labels
    )
    assert (withdrawn or 0) == row.withdrawn
