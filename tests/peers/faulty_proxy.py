"""A real HTTP proxy on loopback in front of a real peer, whose failure mode is switched live.

Modes: pass-through, refuse connections (the listening socket is closed), 500, 429 with
Retry-After, 401, and hang (the request is read and never answered). Besides the mode,
`answer_next` scripts the answers to the next POSTs carrying events (any status and body, as
a proxy or a WAF in front of the API might give), `answer_next_requests` those to the next
requests of any kind, and `refuse_bodies_over` answers 413 to
POSTs larger than a limit, as a proxy's body size limit does. Every response closes its
connection, so a client cannot keep using a connection accepted before a refusal.
Each request is recorded (time, method, path, mode, events in the body and its size) for the
assertions.
"""

from __future__ import annotations

import asyncio
import enum
import io
import time
from collections import deque
from dataclasses import dataclass

import aiohttp
import orjson
from aiohttp import web

from ._util import free_port

# Hop-by-hop and framing headers: aiohttp sets its own.
_NOT_FORWARDED = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "accept-encoding"}
)


# Above any batch the emitter may send (INFRA_OBSERVER_EMITTER_BATCH_MAX_BYTES).
_MAX_BODY_BYTES = 64 * 1024 * 1024


class Mode(enum.Enum):
    PASS = "pass"
    REFUSE = "refuse"
    ERROR_500 = "500"
    TOO_MANY_429 = "429"
    UNAUTHORIZED_401 = "401"
    HANG = "hang"


@dataclass(frozen=True, slots=True)
class Seen:
    at: float
    method: str
    path: str
    mode: Mode
    events: int
    """Events in a POST /events body (0 for the emitter's empty reachability check)."""
    size: int
    """Bytes of the request body."""


@dataclass(frozen=True, slots=True)
class Scripted:
    """One scripted answer: a status and a body, sent as is."""

    status: int
    body: bytes = b"refused by the proxy"
    content_type: str = "text/plain"


class FaultyProxy:
    """``await FaultyProxy(upstream).start()``; ``api_url`` is what the daemon is given."""

    def __init__(self, upstream_api_url: str, *, retry_after_seconds: int = 2) -> None:
        self._upstream = upstream_api_url.rstrip("/")
        self.port = free_port()
        self.retry_after_seconds = retry_after_seconds
        self.mode = Mode.PASS
        self.seen: list[Seen] = []
        self._body_limit: int | None = None
        self._scripted: deque[Scripted] = deque()
        self._scripted_any: deque[Scripted] = deque()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._session: aiohttp.ClientSession | None = None
        self._release = asyncio.Event()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    async def start(self) -> FaultyProxy:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        # aiohttp refuses bodies over 1 MiB by default; a batch may be larger.
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        app.router.add_route("*", "/api/{tail:.*}", self._handle)
        # A short shutdown: hung handlers are released on stop, nothing else is in flight.
        self._runner = web.AppRunner(app, shutdown_timeout=1)
        await self._runner.setup()
        await self._listen()
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = self._site = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def set_mode(self, mode: Mode) -> None:
        previous, self.mode = self.mode, mode
        if previous is Mode.HANG and mode is not Mode.HANG:
            self._release.set()  # hung handlers answer now; their clients gave up long ago
        if mode is Mode.HANG:
            self._release = asyncio.Event()
        if mode is Mode.REFUSE and self._site is not None:
            await self._site.stop()  # stops listening: new connections are refused
            self._site = None
        elif mode is not Mode.REFUSE and self._site is None:
            await self._listen()

    def answer_next(self, *answers: Scripted) -> None:
        """Answer the next POSTs that carry events with these, in turn; then the mode again."""
        self._scripted.extend(answers)

    def answer_next_requests(self, *answers: Scripted) -> None:
        """Answer the next requests, whatever they carry, with these, in turn; then the mode
        again."""
        self._scripted_any.extend(answers)

    def refuse_bodies_over(self, limit: int | None) -> None:
        """Answer 413 to a POST whose body is larger than `limit` bytes (None: no limit)."""
        self._body_limit = limit

    def posts(self, since: float = 0.0, until: float = float("inf")) -> list[Seen]:
        """POST /events requests that reached the proxy in [since, until)."""
        return [
            seen
            for seen in self.seen
            if seen.method == "POST" and seen.path.endswith("/events") and since <= seen.at < until
        ]

    def requests_to(self, method: str, path: str) -> list[Seen]:
        """Requests with this method whose path (under `/api`) is `path`."""
        return [seen for seen in self.seen if seen.method == method and seen.path == "/api" + path]

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        mode = self.mode
        events = _event_count(body)
        self.seen.append(
            Seen(time.monotonic(), request.method, request.path, mode, events, len(body))
        )
        if self._scripted_any or (events and self._scripted):
            answer = (self._scripted_any or self._scripted).popleft()
            response = web.Response(
                status=answer.status, body=answer.body, content_type=answer.content_type
            )
        elif self._body_limit is not None and len(body) > self._body_limit:
            response = web.Response(status=413, text="request entity too large")
        else:
            response = await self._answer(request, body, mode)
        response.force_close()
        return response

    async def _answer(self, request: web.Request, body: bytes, mode: Mode) -> web.Response:
        if mode is Mode.HANG:
            await self._release.wait()
            return web.Response(status=503, text="released")
        if mode is Mode.ERROR_500:
            return web.Response(status=500, text="injected failure")
        if mode is Mode.TOO_MANY_429:
            return web.Response(
                status=429,
                text="slow down",
                headers={"Retry-After": str(self.retry_after_seconds)},
            )
        if mode is Mode.UNAUTHORIZED_401:
            return web.json_response({"detail": "Unauthorized"}, status=401)
        return await self._forward(request, body)

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self._session is not None
        tail = request.path.removeprefix("/api")
        url = self._upstream + tail + (f"?{request.query_string}" if request.query_string else "")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        # As a stream: aiohttp warns about bodies over 1 MiB given as bytes.
        async with self._session.request(
            request.method, url, data=io.BytesIO(body), headers=headers
        ) as upstream:
            content = await upstream.read()
            kept = {k: v for k, v in upstream.headers.items() if k.lower() in ("content-type",)}
            return web.Response(status=upstream.status, body=content, headers=kept)


def _event_count(body: bytes) -> int:
    try:
        decoded = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return 0
    return len(decoded) if isinstance(decoded, list) else 0
