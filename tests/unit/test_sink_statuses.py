"""Every status class of the events API's answer, mapped onto the error tree."""

from __future__ import annotations

import orjson
import pytest

from infra_observer.errors import (
    BatchTooLargeError,
    MisconfiguredSinkError,
    RejectedBatchError,
    RetryableDeliveryError,
    UnexpectedStatusError,
)
from infra_observer.prefect_api.client import Answer
from infra_observer.prefect_api.statuses import raise_for_status

URL = "http://127.0.0.1:4200/api/events"
# The Prefect server's answer to a request it cannot validate (FastAPI's RequestValidationError).
VALIDATION = orjson.dumps(
    {
        "exception_message": "Invalid request received.",
        "exception_detail": [{"type": "string_type", "loc": ["body", 0, "resource", "x"]}],
        "request_body": [{"resource": {"x": 3}}],
    }
)
# What the Prefect server answers to a body that is not UTF-8 (its only 400 for /events).
NOT_PARSED = b'{"detail":"There was an error parsing the body"}'
WAF_PAGE = b"<html><body><h1>400 Bad Request</h1>Request blocked.</body></html>"


def answer(status: int, body: bytes = b"", **headers: str) -> Answer:
    named = {name.lower(): value for name, value in headers.items()}
    return Answer(method="POST", url=URL, status_code=status, headers=named, content=body)


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_delivered(status: int) -> None:
    raise_for_status(answer(status), url=URL)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_passing_failures_are_retried(status: int) -> None:
    with pytest.raises(RetryableDeliveryError, match=f"answered {status}") as raised:
        raise_for_status(answer(status, **{"Retry-After": "3"}), url=URL)
    assert not isinstance(raised.value, UnexpectedStatusError | MisconfiguredSinkError)
    assert raised.value.retry_after == 3.0


@pytest.mark.parametrize(("status", "names"), [(401, "PREFECT_API_KEY"), (404, "/api")])
def test_operator_errors_are_retried_slowly(status: int, names: str) -> None:
    with pytest.raises(MisconfiguredSinkError, match=names):
        raise_for_status(answer(status), url=URL)


@pytest.mark.parametrize(
    ("status", "body"),
    [(422, b'{"detail": "anything"}'), (422, b""), (400, VALIDATION), (400, NOT_PARSED)],
)
def test_only_the_servers_refusal_rejects_content(status: int, body: bytes) -> None:
    with pytest.raises(RejectedBatchError) as raised:
        raise_for_status(answer(status, body), url=URL)
    assert type(raised.value) is RejectedBatchError
    assert raised.value.status == status


def test_413_asks_for_smaller_batches() -> None:
    with pytest.raises(BatchTooLargeError) as raised:
        raise_for_status(answer(413, b"<html>413 Request Entity Too Large</html>"), url=URL)
    assert raised.value.status == 413


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, WAF_PAGE),
        (400, b'{"detail": "bad request"}'),
        (400, b"[1, 2]"),
        (400, b""),
        (405, b"Method Not Allowed"),
        (407, b"Proxy Authentication Required"),
        (409, b'{"detail": "conflict"}'),
        (410, b""),
        (418, b"I'm a teapot"),
        (451, b""),
        (499, b""),
    ],
)
def test_any_other_status_is_a_delivery_failure(status: int, body: bytes) -> None:
    with pytest.raises(UnexpectedStatusError) as raised:
        raise_for_status(answer(status, body, **{"Retry-After": "2"}), url=URL)
    message = str(raised.value)
    assert message.startswith(f"POST {URL} answered {status},")
    assert raised.value.retry_after == 2.0


def test_the_log_line_carries_only_the_start_of_a_long_page() -> None:
    page = b"<html>" + b"blocked " * 1000 + b"</html>"
    with pytest.raises(UnexpectedStatusError) as raised:
        raise_for_status(answer(405, page), url=URL)
    assert len(str(raised.value)) < 400
