"""What `PrefectApi` puts on the wire and reads back, against loopback servers: the
headers httpx used to add, compressed answers, and the proxy the environment names."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from infra_observer.config import PrefectSettings
from infra_observer.errors import ConfigError
from infra_observer.prefect_api.client import Answer, PrefectApi

PROXY_VARIABLES = (
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
)


@dataclass
class Received:
    """What one loopback server was sent: each request's line and headers (lower case)."""

    lines: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)


@asynccontextmanager
async def server(
    *, body: bytes = b"{}", answer_headers: str = ""
) -> AsyncIterator[tuple[int, Received]]:
    """Answers every request 200 with `body` (and `answer_headers`); yields its port."""
    received = Received()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.lines.append((await reader.readline()).decode().strip())
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.lower()] = value.strip()
        received.headers.append(headers)
        received.bodies.append(await reader.readexactly(int(headers.get("content-length", 0))))
        writer.write(
            f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{answer_headers}"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    listening = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield listening.sockets[0].getsockname()[1], received
    finally:
        listening.close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def api_for(url: str, **settings: str) -> PrefectApi:
    prefect = PrefectSettings(api_url=url, **settings)  # type: ignore[arg-type]
    return PrefectApi.from_settings(prefect, timeout_seconds=10)


async def one_request(
    url: str, path: str, *, body: bytes | None = b"[]", method: str = "POST", **settings: str
) -> Answer:
    """One request through a `PrefectApi` for `url`, closed afterwards."""
    api = api_for(url, **settings)
    try:
        return await api.request(method, path, body=body)
    finally:
        await api.aclose()


async def test_a_request_carries_host_length_type_auth_and_the_base_path() -> None:
    async with server() as (port, received):
        answer = await one_request(
            f"http://127.0.0.1:{port}/api/",
            "/flow_runs/filter",
            body=b'{"limit": 1}',
            api_key="secret-key",
        )
    assert received.lines == ["POST /api/flow_runs/filter HTTP/1.1"]
    sent = received.headers[0]
    assert sent["host"] == f"127.0.0.1:{port}"
    assert sent["content-length"] == "12"
    assert sent["content-type"] == "application/json"
    assert sent["authorization"] == "Bearer secret-key"
    assert sent["user-agent"].startswith("infra-observer/")
    assert received.bodies == [b'{"limit": 1}']
    assert (answer.status_code, answer.content, answer.method) == (200, b"{}", "POST")
    assert answer.url == f"http://127.0.0.1:{port}/api/flow_runs/filter"
    assert answer.headers["content-length"] == "2"


async def test_a_read_sends_no_body_headers_and_basic_auth() -> None:
    async with server() as (port, received):
        await one_request(
            f"http://127.0.0.1:{port}/api",
            "/flow_runs/1",
            body=None,
            method="GET",
            api_auth_string="user:pass",
        )
    sent = received.headers[0]
    assert "content-length" not in sent
    assert "content-type" not in sent
    assert sent["authorization"] == "Basic dXNlcjpwYXNz"


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),
    ],
)
async def test_a_compressed_answer_is_read_decompressed(encoding: str, compress: object) -> None:
    plain = b'[{"id": "x"}]' * 100
    assert callable(compress)
    async with server(body=compress(plain), answer_headers=f"Content-Encoding: {encoding}\r\n") as (
        port,
        received,
    ):
        answer = await one_request(f"http://127.0.0.1:{port}/api", "/flow_runs/filter", body=b"{}")
    assert received.headers[0]["accept-encoding"] == "gzip, deflate"
    assert answer.content == plain


async def test_the_proxy_the_environment_names_gets_its_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with server() as (port, received):
        monkeypatch.setenv("HTTP_PROXY", f"http://proxy%20user:p%40ss@127.0.0.1:{port}")
        # Only the proxy can reach this host: a direct request could not even resolve it.
        await one_request("http://prefect.invalid:4200/api", "/events", body=b"[]")
    assert received.lines == ["POST http://prefect.invalid:4200/api/events HTTP/1.1"]
    assert received.headers[0]["host"] == "prefect.invalid:4200"
    assert received.headers[0]["proxy-authorization"] == "Basic cHJveHkgdXNlcjpwQHNz"


def test_a_socks_proxy_is_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
    with pytest.raises(ConfigError, match=r"socks5://127\.0\.0\.1 .* only those are supported"):
        api_for("http://prefect.invalid/api")


async def test_the_host_header_leaves_out_the_default_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with server() as (port, received):
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        await one_request(
            "http://prefect.invalid:80/api/accounts/a/workspaces/w", "/events", body=b"[]"
        )
    assert received.headers[0]["host"] == "prefect.invalid"
    assert received.lines == [
        "POST http://prefect.invalid/api/accounts/a/workspaces/w/events HTTP/1.1"
    ]
