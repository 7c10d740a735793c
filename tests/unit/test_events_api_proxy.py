"""The events-API sink honours a proxy named by the environment (through httpx's own
proxy handling), and posts straight through its transport otherwise."""

from __future__ import annotations

import asyncio

import pytest

from infra_observer.config import EmitterSettings, PrefectSettings
from infra_observer.emitter import events_api_sink


async def recording_server(targets: list[str]) -> tuple[asyncio.Server, int]:
    """Answers every request 204 and records its request target."""

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
    return server, server.sockets[0].getsockname()[1]


async def test_a_proxy_from_the_environment_carries_the_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    targets: list[str] = []
    proxy, port = await recording_server(targets)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    # Only the proxy can reach this host: a direct request could not even resolve it.
    sink = events_api_sink(PrefectSettings(api_url="http://events.invalid/api"), EmitterSettings())
    try:
        assert "accepted" in await sink.check()
    finally:
        await sink.aclose()
        proxy.close()
    assert targets == ["http://events.invalid/api/events"]


async def test_without_a_proxy_events_go_straight_to_the_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    targets: list[str] = []
    server, port = await recording_server(targets)
    sink = events_api_sink(
        PrefectSettings(api_url=f"http://127.0.0.1:{port}/api"), EmitterSettings()
    )
    try:
        assert "accepted" in await sink.check()
    finally:
        await sink.aclose()
        server.close()
    assert targets == ["/api/events"]
