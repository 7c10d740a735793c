"""Which events the events API already stores, asked before they are sent again after a start.

A new process knows nothing of what the one before it delivered: each source reports the
current state of what it watches, with the same ids. The server stores an id once, but its
SQLite event persister fails on a write batch made only of already-stored ids and, after its
retries, drops it together with any new events caught in it (docs/reliability.md, "Restarts",
names the version). So, after a start, events that an earlier process may have delivered are
looked up by id first, and the ones found are not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

import orjson
import structlog

from infra_observer.errors import DeliveryError, MisconfiguredSinkError, RetryableDeliveryError
from infra_observer.events.model import Event
from infra_observer.metrics import Metrics

if TYPE_CHECKING:
    from infra_observer.prefect_api.client import PrefectApi

log = structlog.get_logger(__name__)

PAGE_LIMIT = 50
"""Ids per `/events/filter` read: the server's largest page."""
START_MARGIN = timedelta(minutes=1)
"""Events that occurred up to this long after the start are still looked up: clocks of the
nodes may disagree, and during a rolling update the old process still sends for a while."""
FILTER_PATH = "/events/filter"
_WINDOW = timedelta(days=1)
_CONFIGURATION_STATUSES = frozenset({401, 403, 404, 405})


async def stored_ids(api: PrefectApi, *, events: Sequence[Event]) -> set[int]:
    """The ids (`UUID.int`) among `events` (at most `PAGE_LIMIT`) that the server stores.

    Read with `POST /events/filter`. The `occurred` window is given explicitly:
    the server's default covers only the last day up to now. Raises `MisconfiguredSinkError`
    when the server refuses reads (401, 403) or has no such endpoint (404, 405), and
    `RetryableDeliveryError` for any other failure.
    """
    now = datetime.now(UTC)
    occurred = [event.occurred for event in events]
    body = {
        "filter": {
            "id": {"id": [str(event.id) for event in events]},
            "occurred": {
                "since": (min(*occurred, now) - _WINDOW).isoformat(),
                "until": (max(*occurred, now) + _WINDOW).isoformat(),
            },
        },
        "limit": PAGE_LIMIT,
    }
    url = api.url(FILTER_PATH)
    try:
        response = await api.request("POST", FILTER_PATH, body=orjson.dumps(body))
    except DeliveryError as exc:
        # Whatever kept the read from an answer, the events are sent: never a reason to
        # stop looking up the next ones.
        raise RetryableDeliveryError(str(exc)) from exc
    if response.status_code in _CONFIGURATION_STATUSES:
        raise MisconfiguredSinkError(f"POST {url} answered {response.status_code}")
    if response.status_code != 200:
        raise RetryableDeliveryError(f"POST {url} answered {response.status_code}")
    return _ids_in_page(response.content, url=url)


def _ids_in_page(content: bytes, *, url: str) -> set[int]:
    try:
        page = orjson.loads(content)
        return {UUID(str(event["id"])).int for event in page["events"]}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise RetryableDeliveryError(
            f"POST {url} answered 200 with no page of events ({type(exc).__name__}: {exc})"
        ) from exc


class StoredEvents:
    """Finds, in a batch about to be sent, the events an earlier process already delivered.

    Only events that may have been: without `follows` (no earlier event of their resource
    in this process, or none within the chaining window) and occurred before this process
    started (plus `START_MARGIN`). Other events cost one comparison each; a batch without
    such events costs no request. A failed read is logged and counted, and its events are
    sent: a duplicate is better than a loss.
    """

    def __init__(
        self,
        *,
        api: PrefectApi,
        metrics: Metrics,
    ) -> None:
        self._api = api
        # Built once, at start: what occurred before may have been sent by an earlier process.
        self._cutoff = datetime.now(UTC) + START_MARGIN
        self._enabled = True
        self._lookups = metrics.stored_lookups

    async def among(self, events: Sequence[Event], *, stopping: asyncio.Event) -> set[int]:
        """The ids (`UUID.int`) of those `events` the server already stores.

        Once `stopping` is set, reads still in flight are given up and nothing is found:
        the events go out within the shutdown deadline, if need be twice.
        """
        if not self._enabled:
            return set()
        cutoff = self._cutoff
        candidates = [e for e in events if e.follows is None and e.occurred < cutoff]
        if not candidates:
            return set()
        chunks = [
            candidates[start : start + PAGE_LIMIT]
            for start in range(0, len(candidates), PAGE_LIMIT)
        ]
        lookups = asyncio.gather(*(self._lookup(chunk) for chunk in chunks))
        stopped = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait((lookups, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if not lookups.done():
            lookups.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lookups
            log.info("stored_lookup_given_up", events=len(candidates), reason="stopping")
            return set()
        found: set[int] = set()
        for ids in lookups.result():
            found |= ids
        return found

    async def _lookup(self, events: Sequence[Event]) -> set[int]:
        try:
            found = await stored_ids(self._api, events=events)
        except MisconfiguredSinkError as exc:
            if self._enabled:
                self._enabled = False
                self._lookups.labels("disabled").inc()
                log.warning(
                    "stored_lookup_disabled",
                    error=str(exc),
                    events=len(events),
                    fix="give the credentials read access to events, or set "
                    "INFRA_OBSERVER_EMITTER_SKIP_STORED=false; until then events an earlier "
                    "process delivered are sent again",
                )
            return set()
        except RetryableDeliveryError as exc:
            self._lookups.labels("failed").inc()
            log.warning("stored_lookup_failed", error=str(exc), events=len(events), sent=True)
            return set()
        self._lookups.labels("ok").inc()
        return found
