"""The loopback sink: a separate process that records when each event arrives.

    python -m benchmarks._sink [--upstream http://127.0.0.1:4200]

Without `--upstream` it answers every `POST /api/events` with 204 (a sink faster than any
events API). With it, it is a recording proxy in front of a real Prefect server: HTTP
requests and the `/api/events/in` websocket (what Prefect's own client emits through) are
relayed both ways. Either way it writes down, for each event, its id and the wall-clock
time it arrived, and counts every other request by method and path (the reads an
observer makes; for `/flow_runs/filter`, also the flow-run ids it asks for).
`GET /_bench/arrivals?since=N` returns the arrivals from index N on and the request counts.
It prints its port on the first line of stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from typing import Any

import aiohttp
import orjson
from aiohttp import web

HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}
)


class Recorder:
    def __init__(self, upstream: str | None) -> None:
        self.upstream = upstream.rstrip("/") if upstream else None
        self.arrivals: list[tuple[str, str, str, float]] = []
        self.requests: Counter[str] = Counter()
        self.session: aiohttp.ClientSession | None = None

    def record_events(self, events: Any, arrived: float) -> None:
        if isinstance(events, dict):
            events = [events]
        if isinstance(events, list):
            self.arrivals.extend(
                (str(event.get("id")), str(event.get("event")), _resource_id(event), arrived)
                for event in events
                if isinstance(event, dict)
            )

    async def post_events(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        arrived = time.time()
        self.record_events(orjson.loads(body), arrived)
        self.requests["POST /api/events"] += 1
        if self.upstream is None:
            return web.Response(status=204)
        return await self.relay(request, body)

    async def relay(self, request: web.Request, body: bytes) -> web.StreamResponse:
        assert self.session is not None
        assert self.upstream is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        async with self.session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as answer:
            content = await answer.read()
            out = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS}
            return web.Response(status=answer.status, body=content, headers=out)

    async def other(self, request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/events/in") and request.headers.get("Upgrade", "").lower() == (
            "websocket"
        ):
            return await self.websocket(request)
        key = f"{request.method} {_route(request.path)}"
        self.requests[key] += 1
        body = await request.read()
        if key == "POST /api/flow_runs/filter":
            # One bulk read may cover many runs: count the ids it asks for as well.
            self.requests[f"ids in {key}"] += _filtered_ids(body)
        if self.upstream is None:
            return web.Response(status=404)
        return await self.relay(request, body)

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        assert self.upstream is not None
        self.requests["WS /api/events/in"] += 1
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        protocols = tuple(p.strip() for p in offered.split(",") if p.strip())
        client_ws = web.WebSocketResponse(protocols=protocols, max_msg_size=0)
        await client_ws.prepare(request)
        async with self.session.ws_connect(
            self.upstream + request.path_qs, protocols=protocols, max_msg_size=0
        ) as server_ws:

            async def downstream() -> None:
                async for message in server_ws:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        await client_ws.send_str(message.data)
                await client_ws.close()

            relay = asyncio.create_task(downstream())
            async for message in client_ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                arrived = time.time()
                try:
                    decoded = orjson.loads(message.data)
                except orjson.JSONDecodeError:
                    decoded = None
                if isinstance(decoded, dict) and "event" in decoded and "id" in decoded:
                    self.record_events(decoded, arrived)
                await server_ws.send_str(message.data)
            relay.cancel()
        return client_ws

    async def arrivals_since(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        body = {"arrivals": self.arrivals[since:], "requests": dict(self.requests)}
        return web.Response(body=orjson.dumps(body), content_type="application/json")


def _resource_id(event: dict[str, Any]) -> str:
    resource = event.get("resource")
    return str(resource.get("prefect.resource.id")) if isinstance(resource, dict) else ""


def _filtered_ids(body: bytes) -> int:
    """How many flow-run ids a `/flow_runs/filter` body names (0 when it names none)."""
    try:
        decoded = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        return 0
    flow_runs = decoded.get("flow_runs") if isinstance(decoded, dict) else None
    ids = flow_runs.get("id") if isinstance(flow_runs, dict) else None
    any_ = ids.get("any_") if isinstance(ids, dict) else None
    return len(any_) if isinstance(any_, list) else 0


def _route(path: str) -> str:
    """The path with ids collapsed, so reads of many flow runs count under one key."""
    parts = path.split("/")
    return "/".join("{id}" if len(part) == 36 and part.count("-") == 4 else part for part in parts)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", default=None)
    args = parser.parse_args()
    recorder = Recorder(args.upstream)
    recorder.session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
    )
    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_get("/_bench/arrivals", recorder.arrivals_since)
    app.router.add_post("/api/events", recorder.post_events)
    app.router.add_route("*", "/{tail:.*}", recorder.other)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
