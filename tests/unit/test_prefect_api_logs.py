"""Lines as log records within Prefect's size limits, and records as requests within its
batch limit."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime

import orjson
from hypothesis import given
from hypothesis import strategies as st

from infra_observer.prefect_api.logs import (
    BATCH_BYTES,
    CLOUD_MAX_LOG_BYTES,
    CUT_MARKER,
    MAX_LOG_BYTES,
    fit,
    log_records,
    max_log_bytes,
    request_bodies,
)

RUN = uuid.UUID("a1b2c3d4-e5f6-7890-abcd-ef1234567890")
AT = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def size(text: str) -> int:
    return len(orjson.dumps(text))


def test_prefects_own_limits() -> None:
    assert (MAX_LOG_BYTES, CLOUD_MAX_LOG_BYTES, BATCH_BYTES) == (1_000_000, 25_000, 4_000_000)
    assert max_log_bytes("http://127.0.0.1:4200/api") == MAX_LOG_BYTES
    assert max_log_bytes("https://api.prefect.cloud/api/accounts/a/workspaces/w") == 25_000


def test_a_line_that_fits_is_kept_whole() -> None:
    assert fit("exit code 137", room=size("exit code 137")) == "exit code 137"


@given(st.text(min_size=1), st.integers(min_value=size(CUT_MARKER), max_value=400))
def test_a_cut_line_fits_and_keeps_its_start(line: str, room: int) -> None:
    kept = fit(line, room=room)
    assert size(kept) <= room
    if kept != line:
        assert kept.endswith(CUT_MARKER)
        assert line.startswith(kept.removesuffix(CUT_MARKER))


def test_escapes_and_wide_characters_count_as_written() -> None:
    line = "\u20ac\n\x01" * 100  # 3 + 2 + 6 bytes each, as JSON
    kept = fit(line, room=120)
    assert size(kept) <= 120
    assert len(kept) > len(CUT_MARKER)


def test_records_carry_the_run_level_and_name_in_order() -> None:
    records = [
        orjson.loads(record)
        for record in log_records(
            RUN, ["one", "two"], level=40, name="io", timestamp=AT, max_record_bytes=1000
        )
    ]
    assert records == [
        {
            "name": "io",
            "level": 40,
            "message": "one",
            "timestamp": "2026-12-07T12:00:00+00:00",
            "flow_run_id": str(RUN),
        },
        {
            "name": "io",
            "level": 40,
            "message": "two",
            "timestamp": "2026-12-07T12:00:00.000001+00:00",
            "flow_run_id": str(RUN),
        },
    ]


def test_a_record_over_the_limit_is_cut_to_it() -> None:
    (record,) = log_records(
        RUN, ["x" * 5000], level=30, name="io", timestamp=AT, max_record_bytes=1000
    )
    assert 990 <= len(record) <= 1000
    assert orjson.loads(record)["message"].endswith(CUT_MARKER)


@given(st.lists(st.text(max_size=20), max_size=40), st.integers(130, 400))
def test_bodies_keep_every_record_in_order_within_the_limit(
    messages: list[str], limit: int
) -> None:
    records = [orjson.dumps(message) for message in messages]  # each at most 122 bytes
    bodies = list(request_bodies(records, max_bytes=limit))
    assert all(len(body) <= limit for body in bodies)
    assert [message for body in bodies for message in orjson.loads(body)] == messages
    # A body ends before the last only when the next record did not fit in it.
    for body, after in itertools.pairwise(bodies):
        first_after = orjson.dumps(orjson.loads(after)[0])
        assert len(body) + 1 + len(first_after) > limit


def test_a_record_over_the_limit_goes_alone() -> None:
    records = [b'"a"', b'"' + b"b" * 50 + b'"', b'"c"']
    assert list(request_bodies(records, max_bytes=20)) == [
        b'["a"]',
        b"[" + records[1] + b"]",
        b'["c"]',
    ]


def test_what_utf8_cannot_carry_is_replaced() -> None:
    line = b"exit \xff".decode("utf-8", "surrogateescape")
    (record,) = log_records(RUN, [line], level=30, name="io", timestamp=AT, max_record_bytes=999)
    assert orjson.loads(record)["message"] == "exit ?"
