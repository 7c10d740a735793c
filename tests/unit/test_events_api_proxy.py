"""The events-API sink honours a proxy named by the environment (through httpx's own
proxy handling), and posts straight to the API otherwise."""

from __future__ import annotations

import asyncio

import pytest

from infra_observer.config import EmitterSettings, PrefectSettings
from infra_observer.emitter import events_api_sink


async def recording_server() -> tuple[asyncio.Server, int, list[str]]:
    """Answers every request 204; the list gets each request's target."""
    targets: list[str] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = (await reader.readline()).decode()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await reader.readexactly(length)
        targets.append(request_line.split()[1])
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], targets


async def posted_targets(api_url: str, server: asyncio.Server, targets: list[str]) -> list[str]:
    """Check the sink for `api_url` once (an empty POST); the targets `server` received."""
    sink = events_api_sink(PrefectSettings(api_url=api_url), EmitterSettings())
    try:
        assert "accepted" in await sink.check()
    finally:
        await sink.aclose()
        server.close()
    return targets


async def test_a_proxy_from_the_environment_carries_the_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy, port, targets = await recording_server()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    # Only the proxy can reach this host: a direct request could not even resolve it.
    assert await posted_targets("http://events.invalid/api", proxy, targets) == [
        "http://events.invalid/api/events"
    ]


async def test_without_a_proxy_events_go_straight_to_the_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    server, port, targets = await recording_server()
    assert await posted_targets(f"http://127.0.0.1:{port}/api", server, targets) == ["/api/events"]
