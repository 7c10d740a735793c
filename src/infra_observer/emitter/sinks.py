"""Where batches go: the Prefect events API, or JSON lines on stdout."""

from __future__ import annotations

import base64
import email.utils
import math
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, BinaryIO, Protocol

import orjson

from infra_observer import __version__
from infra_observer.config import EmitterSettings, PrefectSettings
from infra_observer.errors import (
    BatchTooLargeError,
    ConfigError,
    MisconfiguredSinkError,
    RejectedBatchError,
    RetryableDeliveryError,
    UnexpectedStatusError,
)
from infra_observer.events.model import Event, batch_to_json

if TYPE_CHECKING:
    import httpx

_RETRYABLE_STATUSES = frozenset({408, 425, 429})
_DETAIL_LIMIT = 500
_EXCERPT_LIMIT = 200
_BODY_NOT_PARSED = "There was an error parsing the body"
RETRY_AFTER_LIMIT_SECONDS = 300.0
"""The longest `Retry-After` obeyed: a bogus header or a far date must not stall delivery."""


class Sink(Protocol):
    name: str

    async def send(self, batch: Sequence[Event]) -> None:
        """Deliver the whole batch or raise a `DeliveryError` subclass."""
        ...

    async def check(self) -> str:
        """Reach the sink once; return what was reached or raise a `DeliveryError`."""
        ...

    async def aclose(self) -> None: ...


def events_api_client(prefect: PrefectSettings, emitter: EmitterSettings) -> httpx.AsyncClient:
    """The HTTP client for the events API, with Prefect's auth conventions."""
    return _client_and_transport(prefect, emitter)[0]


def events_api_sink(prefect: PrefectSettings, emitter: EmitterSettings) -> EventsApiSink:
    """The sink for `PREFECT_API_URL`, posting straight through its client's transport."""
    if prefect.api_url is None:
        raise ConfigError("the events API sink needs PREFECT_API_URL")
    client, transport = _client_and_transport(prefect, emitter)
    return EventsApiSink(client=client, api_url=str(prefect.api_url), transport=transport)


def _client_and_transport(
    prefect: PrefectSettings, emitter: EmitterSettings
) -> tuple[httpx.AsyncClient, httpx.AsyncBaseTransport]:
    # Imported here, not at the top: the stdout sink never needs httpx.
    import httpx

    from infra_observer.transport import asyncio_transport, environment_proxy

    headers = {"User-Agent": f"infra-observer/{__version__}"}
    if prefect.api_key is not None:
        headers["Authorization"] = f"Bearer {prefect.api_key.get_secret_value()}"
    elif prefect.api_auth_string is not None:
        token = base64.b64encode(prefect.api_auth_string.get_secret_value().encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    verify: ssl.SSLContext | bool = True
    if emitter.ca_bundle is not None:
        verify = ssl.create_default_context(cafile=str(emitter.ca_bundle))
    elif prefect.api_url is not None and prefect.api_url.scheme == "http":
        # Plain HTTP never uses it (redirects are not followed), and loading the default
        # CA bundle would cost about 0.8 MiB; with no CA at all, TLS could only fail.
        verify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ssl_context = httpx.create_ssl_context(verify=verify)
    transport = asyncio_transport(
        ssl_context=ssl_context,
        limits=httpx.Limits(),
        proxy=environment_proxy(str(prefect.api_url)) if prefect.api_url else None,
    )
    client = httpx.AsyncClient(
        transport=transport,
        headers=headers,
        timeout=httpx.Timeout(emitter.request_timeout_seconds),
        follow_redirects=False,
    )
    return client, transport


class EventsApiSink:
    """POSTs batches to `{PREFECT_API_URL}/events`."""

    name = "events-api"

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        api_url: str,
        transport: httpx.AsyncBaseTransport,
    ) -> None:
        """`transport`, the client's own: requests the client builds (its headers and
        timeouts) go straight to it. The client's auth, redirect and cookie layers cost
        about a third of a POST's CPU, and none of them has work here: auth is a fixed
        header, and redirects are not followed."""
        self._client = client
        self._url = f"{api_url.rstrip('/')}/events"
        self._transport = transport

    @property
    def client(self) -> httpx.AsyncClient:
        """The client, with the API's auth, for reads of the same API (`stored.py`)."""
        return self._client

    async def send(self, batch: Sequence[Event]) -> None:
        await self._post(batch_to_json(batch))

    async def check(self) -> str:
        # An empty list is accepted and stores nothing: it proves reachability and auth.
        await self._post(b"[]")
        return f"POST {self._url} accepted"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _post(self, body: bytes) -> None:
        import httpx  # already imported for the client

        request = self._client.build_request(
            "POST", self._url, content=body, headers={"Content-Type": "application/json"}
        )
        try:
            response = await self._transport.handle_async_request(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            raise RetryableDeliveryError(f"POST {self._url} timed out") from exc
        except httpx.TransportError as exc:
            if _certificate_refused(exc):
                raise MisconfiguredSinkError(
                    f"POST {self._url} failed: the server's TLS certificate did not verify "
                    f"({exc}); give the CA that signed it in INFRA_OBSERVER_EMITTER_CA_BUNDLE"
                ) from exc
            reason = str(exc) or type(exc).__name__
            raise RetryableDeliveryError(
                f"POST {self._url} failed: {reason}; is the Prefect server up, "
                "and PREFECT_API_URL right?"
            ) from exc
        raise_for_status(response, url=self._url)


def _certificate_refused(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def raise_for_status(response: httpx.Response, *, url: str) -> None:
    """Map a status onto the error tree. Only the events API's own refusal of the content
    rejects events; any other answer may come from something in front of it (a proxy, a
    WAF, a load balancer), so the batch is held and retried."""
    status = response.status_code
    if 200 <= status < 300:
        return
    if status in _RETRYABLE_STATUSES or status >= 500:
        raise RetryableDeliveryError(
            f"POST {url} answered {status}", retry_after=retry_after_seconds(response)
        )
    if status in (401, 403):
        raise MisconfiguredSinkError(
            f"POST {url} answered {status}: the credentials were refused; check "
            "PREFECT_API_KEY (Cloud) or PREFECT_API_AUTH_STRING (self-hosted basic auth)"
        )
    if status == 404 or 300 <= status < 400:
        raise MisconfiguredSinkError(
            f"POST {url} answered {status}: no events API there; PREFECT_API_URL must end in "
            "/api (self-hosted) or /api/accounts/<id>/workspaces/<id> (Cloud)"
        )
    detail = response.text[:_DETAIL_LIMIT]
    if status == 422 or (status == 400 and _is_validation_answer(response)):
        raise RejectedBatchError(f"POST {url} answered {status}", status=status, detail=detail)
    if status == 413:
        raise BatchTooLargeError(
            f"POST {url} answered 413: the request is larger than something in front of the "
            "events API accepts",
            status=status,
            detail=detail,
        )
    excerpt = " ".join(detail[:_EXCERPT_LIMIT].split())
    raise UnexpectedStatusError(
        f"POST {url} answered {status}, which is not an answer of the events API; the batch "
        f"is kept and retried: {excerpt!r}",
        retry_after=retry_after_seconds(response),
    )


def _is_validation_answer(response: httpx.Response) -> bool:
    """The Prefect server's answer to a body it could not read or validate: its own
    validation answer, or that of the web framework under it."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return False
    return isinstance(body, dict) and (
        "exception_detail" in body or body.get("detail") == _BODY_NOT_PARSED
    )


def retry_after_seconds(response: httpx.Response) -> float | None:
    """`Retry-After` as seconds, from either of its forms (seconds, or an HTTP date), at
    most `RETRY_AFTER_LIMIT_SECONDS`."""
    value = response.headers.get("Retry-After")
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


class StdoutSink:
    """One JSON object per line: the embedded default when no events API is configured."""

    name = "stdout"

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    async def send(self, batch: Sequence[Event]) -> None:
        self._stream.write(b"".join(event.to_json() + b"\n" for event in batch))
        self._stream.flush()

    async def check(self) -> str:
        return "writing JSON lines to stdout"

    async def aclose(self) -> None:
        self._stream.flush()
