"""Where batches go: the Prefect events API, or JSON lines on stdout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO, Protocol

from infra_observer.config import EmitterSettings, PrefectSettings
from infra_observer.errors import ConfigError
from infra_observer.events.model import Event, batch_to_json
from infra_observer.prefect_api.client import PrefectApi
from infra_observer.prefect_api.statuses import raise_for_status


class Sink(Protocol):
    name: str

    async def send(self, batch: Sequence[Event]) -> None:
        """Deliver the whole batch or raise a `DeliveryError` subclass."""
        ...

    async def check(self) -> str:
        """Reach the sink once; return what was reached or raise a `DeliveryError`."""
        ...

    async def aclose(self) -> None: ...


def events_api_sink(prefect: PrefectSettings, emitter: EmitterSettings) -> EventsApiSink:
    """The sink for `PREFECT_API_URL`."""
    if prefect.api_url is None:
        raise ConfigError("the events API sink needs PREFECT_API_URL")
    api = PrefectApi.from_settings(
        prefect, timeout_seconds=emitter.request_timeout_seconds, ca_bundle=emitter.ca_bundle
    )
    return EventsApiSink(api)


class EventsApiSink:
    """POSTs batches to `{PREFECT_API_URL}/events`; what each answer means is
    `prefect_api/statuses.py`'s, as for every endpoint."""

    name = "events-api"

    def __init__(self, api: PrefectApi) -> None:
        self._api = api
        self._url = api.url("/events")

    @property
    def api(self) -> PrefectApi:
        """The Prefect API the sink posts to, for the other endpoints of the same API
        (`stored.py`, the lifecycle)."""
        return self._api

    async def send(self, batch: Sequence[Event]) -> None:
        await self._post(batch_to_json(batch))

    async def check(self) -> str:
        # An empty list is accepted and stores nothing: it proves reachability and auth.
        await self._post(b"[]")
        return f"POST {self._url} accepted"

    async def aclose(self) -> None:
        await self._api.aclose()

    async def _post(self, body: bytes) -> None:
        raise_for_status(await self._api.request("POST", "/events", body=body), url=self._url)


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
