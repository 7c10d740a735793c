"""The rules for proposing a state, over every state type Prefect has."""

from __future__ import annotations

from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra_observer.lifecycle.policy import (
    FINAL_STATE_TYPES,
    INFRASTRUCTURE_PENDING,
    ProposalKind,
    admits,
)

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
