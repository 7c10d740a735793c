"""Where batches go: the Prefect events API, or JSON lines on stdout."""

from __future__ import annotations

import base64
import email.utils
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, BinaryIO, Protocol

from infra_observer import __version__
from infra_observer.config import EmitterSettings, PrefectSettings
from infra_observer.errors import (
    ConfigError,
    MisconfiguredSinkError,
    RejectedBatchError,
    RetryableDeliveryError,
)
from infra_observer.events.model import Event, batch_to_json
from infra_observer.lean import prepare_imports

if TYPE_CHECKING:
    import httpx

_RETRYABLE_STATUSES = frozenset({408, 425, 429})
_REJECTING_STATUSES = frozenset({400, 413, 422})
_DETAIL_LIMIT = 500


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
    prepare_imports()
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
        _raise_for_status(response, url=self._url)


def _certificate_refused(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _raise_for_status(response: httpx.Response, *, url: str) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    detail = response.text[:_DETAIL_LIMIT]
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
    raise RejectedBatchError(f"POST {url} answered {status}", status=status, detail=detail)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """`Retry-After` as seconds, from either of its forms (seconds, or an HTTP date)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


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
