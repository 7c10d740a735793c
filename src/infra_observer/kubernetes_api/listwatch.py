"""List-then-watch of one collection of any resource, handing what it reads to a handler.

The loop lists the matching objects (paginated) and hands each page over, then watches from
the list's resourceVersion with bookmarks and a server-side timeout, resuming from the last
resourceVersion seen. A 410 Gone means the history is compacted: list again. A stream
silent for longer than the inactivity timeout is presumed dead and replaced. Every other
failure reconnects after a capped, jittered backoff. What the objects mean is the handler's
business (`ResourceHandler`): this module only knows `metadata.resourceVersion`.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol, cast

import httpx
import orjson
import structlog

from infra_observer.config import KubernetesSettings
from infra_observer.errors import ConfigError
from infra_observer.kubernetes_api.client import KubeClient, read_body
from infra_observer.kubernetes_api.status import (
    ApiStatusError,
    GoneError,
    describe,
    refusal_fix,
    status_error,
)
from infra_observer.kubernetes_api.stream import LineSplitter, StalledError, StallGuard
from infra_observer.metrics import Metrics
from infra_observer.retry import Backoff
from infra_observer.transport import gathering_reads

log = structlog.get_logger(__name__)

# Objects per list request: a parsed page of big objects (a worker's pods) stays a few MB of
# Python objects, so a re-list of thousands of them never holds much more than one page.
LIST_PAGE_SIZE = 100
CONNECT_TIMEOUT_SECONDS = 30.0
# A list page must arrive within this; pages are small (LIST_PAGE_SIZE objects).
LIST_TIMEOUT_SECONDS = 120.0

# What a reconnect may follow: transport errors, error statuses, and timeouts.
RETRYABLE = (httpx.HTTPError, ApiStatusError, OSError, TimeoutError, ValueError)


class ResourceHandler(Protocol):
    """What a list-watch hands its objects to: one per resource and scope."""

    def relisting(self) -> None:
        """A list starts: the pages of a complete list follow, then `resynced`."""

    async def listed(self, objects: list[Any]) -> None:
        """One page of the list; an object may be dropped from `objects` once handled."""

    def resynced(self, resource_version: str) -> None:
        """The list is complete: what it did not contain is gone."""

    async def changed(self, kind: str, obj: Any) -> object:
        """One watch event: `kind` is ADDED, MODIFIED or DELETED (what it returns is not
        used here)."""

    def malformed(self, detail: str) -> None:
        """A watch line or list answer that could not be used; the watch goes on."""


@dataclass(frozen=True, slots=True)
class Collection:
    """What one list-watch reads: a collection path, its namespace (None: the whole
    cluster) and label selector, and how its answers are decoded (`orjson.loads` unless a
    resource decodes only the fields it reads)."""

    path: str
    resource: str
    """The resource's plural name (`pods`, `jobs`), for messages."""
    namespace: str | None
    label_selector: str
    decode_line: Callable[[bytes], Any] = orjson.loads
    decode_list: Callable[[bytes], Any] = orjson.loads

    @property
    def label(self) -> str:
        """The scope in logs: the namespace, or `*` for the whole cluster."""
        return self.namespace if self.namespace is not None else "*"


def in_shard(uid: str, *, count: int, index: int) -> bool:
    """Whether object `uid` is shard `index`'s of `count`: the same answer in every replica."""
    # crc32, not hash(): every replica must compute the same share for a uid.
    return count == 1 or zlib.crc32(uid.encode()) % count == index


def json_get(obj: object, key: str) -> Any:
    """`obj[key]` of a decoded JSON object; None when `obj` is not an object."""
    # Decoded JSON objects are dicts: the `Mapping` ABC check costs far more.
    return obj.get(key) if isinstance(obj, dict) else None


def _limits(read: float | None) -> httpx.Timeout:
    return httpx.Timeout(CONNECT_TIMEOUT_SECONDS, read=read)


async def _get(
    client: KubeClient, *, path: str, limits: httpx.Timeout, params: dict[str, str]
) -> httpx.Response:
    """One GET; an error status becomes an exception carrying the server's message."""
    response = await client.request("GET", path, params=params, limits=limits)
    if response.status_code != 200:
        body = await read_body(response)
        raise status_error(response.status_code, response.reason_phrase, body)
    return response


async def list_page(
    client: KubeClient, *, collection: Collection, limit: int, continue_token: str | None = None
) -> dict[str, Any]:
    """One page of the collection's list: `metadata` (resourceVersion, continue), `items`."""
    params = {"labelSelector": collection.label_selector, "limit": str(limit)}
    if continue_token:
        params["continue"] = continue_token
    async with asyncio.timeout(LIST_TIMEOUT_SECONDS):
        response = await _get(
            client, path=collection.path, limits=_limits(LIST_TIMEOUT_SECONDS), params=params
        )
        body = await read_body(response)
    page = collection.decode_list(body)
    if not isinstance(page, dict) or not isinstance(page.get("items", []), list):
        raise ValueError(f"a {collection.resource} list answer is not a list of objects")
    return page


class ListWatch:
    """List-then-watch of one collection, for ever, resuming where it left off."""

    def __init__(
        self,
        *,
        collection: Collection,
        handler: ResourceHandler,
        settings: KubernetesSettings,
        metrics: Metrics,
        source: str,
        page_size: int = LIST_PAGE_SIZE,
    ) -> None:
        self.collection = collection
        self.resource_version: str | None = None
        self._handler = handler
        # Bound once: called for every change.
        self._changed = handler.changed
        self._decode_line = collection.decode_line
        self._settings = settings
        self._metrics = metrics
        self._source = source
        self._page_size = page_size
        self._backoff = Backoff(maximum=settings.backoff_max_seconds)
        self._listed_version: str | None = None

    async def run(self, client: KubeClient) -> None:
        """Forever: list when there is no usable resourceVersion, then watch from it."""
        while True:
            try:
                if self.resource_version is None:
                    await self._relist(client)
                await self._watch(client)
                self._reconnected("expired", level="debug")
            except GoneError as exc:
                self._reconnected("gone", detail=str(exc))
                straight_after_list = self.resource_version == self._listed_version
                self.resource_version = None
                if straight_after_list:
                    # Gone even from a fresh list's version: do not spin on list + watch.
                    await self._sleep_backoff()
            except StalledError:
                self._reconnected("inactivity", timeout=self._settings.inactivity_timeout_seconds)
            except RETRYABLE as exc:
                await self._after_failure(client, exc)

    async def _after_failure(self, client: KubeClient, exc: Exception) -> None:
        collection = self.collection
        fix = refusal_fix(exc, resource=collection.resource, namespace=collection.namespace)
        self._reconnected("error", error=describe(exc), fix=fix)
        if isinstance(exc, ApiStatusError) and exc.status == 401:
            try:
                await client.reload_credentials()
            except ConfigError as error:
                log.error("credentials_reload_failed", scope=collection.label, error=str(error))
        await self._sleep_backoff()

    async def _sleep_backoff(self) -> None:
        delay = self._backoff.next_delay()
        log.info("watch_backoff", scope=self.collection.label, delay=round(delay, 2))
        await asyncio.sleep(delay)

    def _reconnected(self, reason: str, *, level: str = "warning", **fields: Any) -> None:
        self._metrics.source_reconnects.labels(source=self._source, reason=reason).inc()
        getattr(log, level)(
            "watch_restarted",
            scope=self.collection.label,
            reason=reason,
            resource_version=self.resource_version,
            **fields,
        )

    async def _relist(self, client: KubeClient) -> None:
        """List every matching object, page by page, then tell the handler it is complete."""
        self._handler.relisting()
        continue_token: str | None = None
        resource_version = ""
        while True:
            page = await list_page(
                client,
                collection=self.collection,
                limit=self._page_size,
                continue_token=continue_token,
            )
            await self._handler.listed(page.pop("items", None) or [])
            metadata = page.get("metadata") or {}
            resource_version = str(metadata.get("resourceVersion") or "")
            continue_token = metadata.get("continue") or None
            if not continue_token:
                break
        if not resource_version:
            raise ValueError(f"the {self.collection.resource} list answer has no resourceVersion")
        self.resource_version = self._listed_version = resource_version
        self._backoff.reset()
        self._handler.resynced(resource_version)

    async def _watch(self, client: KubeClient) -> None:
        """One watch request, until the server ends it, it fails, or it goes silent."""
        params = {
            "labelSelector": self.collection.label_selector,
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": self.resource_version or "",
            "timeoutSeconds": str(self._settings.watch_timeout_seconds),
        }
        guard = StallGuard(self._settings.inactivity_timeout_seconds)
        async with guard:
            guard.arm()
            response = await _get(
                client, path=self.collection.path, limits=_limits(None), params=params
            )
            try:
                log.debug("watch_opened", scope=self.collection.label, rv=self.resource_version)
                await self._read_lines(response, guard)
            finally:
                await response.aclose()

    async def _read_lines(self, response: httpx.Response, guard: StallGuard) -> None:
        """Handle the stream's lines until it ends.

        Reads let events gather for the coalescing interval before waiting for more:
        events arriving meanwhile wait in the socket and are then decrypted, parsed and
        handled in one go, which costs far less than waking up for each (see
        docs/performance.md).
        """
        lines = LineSplitter()
        # An async generator underneath, typed as an iterator: closed when the watch ends.
        stream = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
        with gathering_reads(response, self._settings.read_coalesce_seconds):
            async with aclosing(stream) as chunks:
                while True:
                    guard.arm()
                    chunk = await anext(chunks, b"")
                    # Handling may wait on a full emitter queue: that is not a stall.
                    guard.disarm()
                    if not chunk:
                        if rest := lines.rest():
                            await self.handle_line(rest)
                        return  # the server ended the watch (timeoutSeconds): resume
                    for line in lines.feed(chunk):
                        await self.handle_line(line)

    async def handle_line(self, line: bytes) -> None:
        """One watch line: a change for the handler, a bookmark, or an error status."""
        try:
            message = self._decode_line(line)
            kind = message["type"]
            obj = message["object"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            self._handler.malformed(f"undecodable watch event ({exc}): {line[:200]!r}")
            return
        self._backoff.reset()
        if kind == "ERROR":
            code = int(json_get(obj, "code") or 0)
            raise status_error(code, "watch error", orjson.dumps(obj))
        if kind == "BOOKMARK":
            self._advance(obj)
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            self._handler.malformed(f"unknown watch event type {kind!r}")
            return
        await self._changed(kind, obj)
        self._advance(obj)

    def _advance(self, obj: object) -> None:
        version = json_get(json_get(obj, "metadata"), "resourceVersion")
        if isinstance(version, str) and version:
            self.resource_version = version
        else:
            self._handler.malformed("watch event object has no metadata.resourceVersion")
