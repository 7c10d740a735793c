"""What an answer of the Prefect API means: its status, or the failure to get one, mapped
onto the error tree, with `Retry-After` obeyed up to a limit.

The same rules hold for every endpoint (events, flow runs, logs). Only the server's own
refusal of the content (422, or 400 with its validation answer) says the request itself is
wrong; any other answer may come from something in front of the API (a proxy, a WAF, a load
balancer), so the request is kept and retried. An endpoint for which 404 means "no such
object" reads that answer itself, before these rules.
"""

from __future__ import annotations

import email.utils
import math
import ssl
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson

from infra_observer.errors import (
    BatchTooLargeError,
    DeliveryError,
    MisconfiguredSinkError,
    RejectedBatchError,
    RetryableDeliveryError,
    UnexpectedStatusError,
)

if TYPE_CHECKING:
    from infra_observer.prefect_api.client import Answer

RETRYABLE_STATUSES = frozenset({408, 425, 429})
"""Passing failures besides every 5xx."""
CREDENTIALS_STATUSES = frozenset({401, 403})
RETRY_AFTER_LIMIT_SECONDS = 300.0
"""The longest `Retry-After` obeyed: a bogus header or a far date must not stall delivery."""
_DETAIL_LIMIT = 500
_EXCERPT_LIMIT = 200
_BODY_NOT_PARSED = "There was an error parsing the body"


def raise_for_status(response: Answer, *, url: str, method: str = "POST") -> None:
    """Return on 2xx; otherwise raise the error its status means (table in
    docs/architecture.md, "Answers of the Prefect API")."""
    status = response.status_code
    if 200 <= status < 300:
        return
    where = f"{method} {url}"
    if status in RETRYABLE_STATUSES or status >= 500:
        raise RetryableDeliveryError(
            f"{where} answered {status}", retry_after=retry_after_seconds(response)
        )
    if status in CREDENTIALS_STATUSES:
        raise MisconfiguredSinkError(
            f"{where} answered {status}: the credentials were refused; check "
            "PREFECT_API_KEY (Cloud) or PREFECT_API_AUTH_STRING (self-hosted basic auth)"
        )
    if status == 404 or 300 <= status < 400:
        raise MisconfiguredSinkError(
            f"{where} answered {status}: no Prefect API there; PREFECT_API_URL must end in "
            "/api (self-hosted) or /api/accounts/<id>/workspaces/<id> (Cloud)"
        )
    detail = response.text[:_DETAIL_LIMIT]
    if status == 422 or (status == 400 and _is_validation_answer(response)):
        raise RejectedBatchError(f"{where} answered {status}", status=status, detail=detail)
    if status == 413:
        raise BatchTooLargeError(
            f"{where} answered 413: the request is larger than something in front of the "
            "Prefect API accepts",
            status=status,
            detail=detail,
        )
    excerpt = " ".join(detail[:_EXCERPT_LIMIT].split())
    raise UnexpectedStatusError(
        f"{where} answered {status}, which is not an answer of the Prefect API; the request "
        f"is kept and retried: {excerpt!r}",
        retry_after=retry_after_seconds(response),
    )


def transport_failure(exc: Exception, *, url: str, method: str = "POST") -> DeliveryError:
    """The error for a request that got no answer (`exc` is one of httpcore's errors): a
    timeout or a refused connection passes; a certificate that did not verify needs an
    operator."""
    import httpcore  # loaded with the pool that failed

    where = f"{method} {url}"
    if isinstance(exc, httpcore.TimeoutException):
        return RetryableDeliveryError(f"{where} timed out")
    if _certificate_refused(exc):
        return MisconfiguredSinkError(
            f"{where} failed: the server's TLS certificate did not verify "
            f"({exc}); give the CA that signed it in INFRA_OBSERVER_EMITTER_CA_BUNDLE"
        )
    reason = str(exc) or type(exc).__name__
    return RetryableDeliveryError(
        f"{where} failed: {reason}; is the Prefect server up, and PREFECT_API_URL right?"
    )


def _certificate_refused(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _is_validation_answer(response: Answer) -> bool:
    """The Prefect server's answer to a body it could not read or validate: its own
    validation answer, or that of the web framework under it."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return False
    return isinstance(body, dict) and (
        "exception_detail" in body or body.get("detail") == _BODY_NOT_PARSED
    )


def retry_after_seconds(response: Answer) -> float | None:
    """`Retry-After` as seconds, from either of its forms (seconds, or an HTTP date), at
    most `RETRY_AFTER_LIMIT_SECONDS`."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    seconds: float | None
    try:
        seconds = float(value)
    except ValueError:
        seconds = _seconds_until(value)
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(0.0, seconds), RETRY_AFTER_LIMIT_SECONDS)


def _seconds_until(http_date: str) -> float | None:
    try:
        moment = email.utils.parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - datetime.now(UTC)).total_seconds()
