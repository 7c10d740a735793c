from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta

import pytest

from infra_observer.prefect_api.client import Answer
from infra_observer.prefect_api.statuses import RETRY_AFTER_LIMIT_SECONDS, retry_after_seconds


def response_with(value: str | None) -> Answer:
    headers = {} if value is None else {"retry-after": value}
    return Answer(
        method="POST",
        url="http://127.0.0.1/api/events",
        status_code=429,
        headers=headers,
        content=b"",
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("7", 7.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None), ("nan", None)],
)
def test_seconds_form(header: str | None, expected: float | None) -> None:
    assert retry_after_seconds(response_with(header)) == expected


def test_http_date_form() -> None:
    later = datetime.now(UTC) + timedelta(seconds=30)
    seconds = retry_after_seconds(response_with(email.utils.format_datetime(later, usegmt=True)))
    assert seconds is not None
    assert 25 <= seconds <= 30


@pytest.mark.parametrize(
    "header",
    [
        "301",
        "86400",
        "1e12",
        "inf",
        email.utils.format_datetime(datetime.now(UTC) + timedelta(days=365), usegmt=True),
    ],
)
def test_a_longer_wait_is_cut_to_the_limit(header: str) -> None:
    assert retry_after_seconds(response_with(header)) == RETRY_AFTER_LIMIT_SECONDS
