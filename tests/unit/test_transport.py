"""The httpx transport on the event loop's own sockets, against real loopback servers,
on both event loops the daemon may run on."""

from __future__ import annotations

import array
import asyncio
import fcntl
import socket
import ssl
import termios
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from infra_observer.transport import (
    AsyncioStream,
    asyncio_transport,
    environment_proxy,
    gathering_reads,
)
from tests.peers._util import make_certificate
from tests.unit.conftest import Run

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

CHUNK = b"x" * 1_000 + b"\n"


def client(ssl_context: ssl.SSLContext | None = None) -> httpx.AsyncClient:
    transport = asyncio_transport(
        ssl_context=ssl_context or ssl.create_default_context(),
        limits=httpx.Limits(max_keepalive_connections=4),
    )
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(10))


@asynccontextmanager
async def server(
    handler: Handler, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback server; yields its URL and a list with one entry per connection."""
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    listening = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    port = listening.sockets[0].getsockname()[1]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}", connections
    finally:
        listening.close()
        await listening.wait_closed()


async def request_head(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    await reader.readline()
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


def chunked_head() -> bytes:
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def streaming(count: int, *, pause: float) -> Handler:
    """Answers with `count` times CHUNK, each written on its own after `pause` s.

    The body has a length, so each piece the client's HTTP parser hands over is what one
    read of the connection returned: the pieces count the reads.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (count * len(CHUNK)))
        for _ in range(count):
            writer.write(CHUNK)
            await writer.drain()
            await asyncio.sleep(pause)

    return handle


async def chunks_seen(url: str, *, gather: float) -> tuple[int, bytes]:
    async with client() as http, http.stream("GET", url) as response:
        parts = []
        with gathering_reads(response, gather):
            async for part in response.aiter_raw():
                parts.append(part)
    return len(parts), b"".join(parts)


def test_every_connection_is_on_the_event_loops_own_sockets(run: Run, tmp_path: Path) -> None:
    """TCP and unix sockets alike: httpx's transport holds a pool on `AsyncioBackend`
    (`infra_observer.tuning.httpx_network_backend` puts it there)."""
    socket_path = str(tmp_path / "api.sock")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def stream_of(http: httpx.AsyncClient, url: str) -> object:
        async with http.stream("GET", url) as response:
            await response.aread()
            return response.extensions["network_stream"]

    async def scenario() -> list[object]:
        listening = await asyncio.start_unix_server(answer, socket_path)
        uds = asyncio_transport(
            ssl_context=ssl.create_default_context(), limits=httpx.Limits(), uds=socket_path
        )
        try:
            async with server(answer) as (url, _), client() as http:
                over_tcp = await stream_of(http, url)
            async with httpx.AsyncClient(transport=uds) as http:
                over_unix_socket = await stream_of(http, "http://localhost/version")
        finally:
            listening.close()
            await listening.wait_closed()
        return [over_tcp, over_unix_socket]

    streams = run(scenario())
    assert [type(stream) for stream in streams] == [AsyncioStream, AsyncioStream]


def test_a_body_written_in_many_pieces_arrives_whole(run: Run) -> None:
    async def scenario() -> None:
        async with server(streaming(300, pause=0)) as (url, _):
            _, body = await chunks_seen(url, gather=0)
        assert body == CHUNK * 300

    run(scenario())


def test_gathering_reads_hands_a_busy_stream_over_in_bursts(run: Run) -> None:
    """A piece every 5 ms for 0.3 s: read as it comes, about one read each; with reads
    gathering for 0.1 s, a handful of bursts. Same bytes either way."""

    async def scenario() -> None:
        async with server(streaming(60, pause=0.005)) as (url, _):
            each, body = await chunks_seen(url, gather=0)
            assert body == CHUNK * 60
            gathered, body = await chunks_seen(url, gather=0.1)
            assert body == CHUNK * 60
        assert each >= 30
        assert gathered <= each // 3

    run(scenario())


async def pieces(response: httpx.Response) -> list[bytes]:
    return [part async for part in response.aiter_raw()]


def unread_bytes(sock: socket.socket) -> int:
    """Bytes received by the kernel for this socket and not read yet."""
    count = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, count)
    return count[0]


def test_gathering_over_tls_leaves_what_arrives_unread_in_the_socket(
    run: Run, tmp_path: Path
) -> None:
    """A paused TLS transport would go on reading the socket, one wake-up per piece;
    while a read gathers, the pieces must wait in the kernel, then come in one go."""
    cert, key = make_certificate(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def scenario() -> tuple[int, list[bytes]]:
        async with (
            server(streaming(60, pause=0.005), tls=server_tls) as (url, _),
            client(ssl.create_default_context(cafile=str(cert))) as http,
            http.stream("GET", url) as response,
        ):
            sock = response.extensions["network_stream"].get_extra_info("socket")
            with gathering_reads(response, 1.0):
                # The body's first read gathers for a second; the server sends its 60
                # pieces within about 0.3 s.
                reading = asyncio.create_task(pieces(response))
                await asyncio.sleep(0.6)
                unread = unread_bytes(sock)
                return unread, await reading

    unread, parts = run(scenario())
    assert b"".join(parts) == CHUNK * 60
    assert unread >= 20 * len(CHUNK)
    assert len(parts) <= 3


def test_gathering_ends_with_the_block(run: Run) -> None:
    async def scenario() -> None:
        async with (
            server(streaming(1, pause=0)) as (url, _),
            client() as http,
            http.stream("GET", url) as response,
        ):
            stream = response.extensions["network_stream"]
            with gathering_reads(response, 0.1):
                assert stream.gather_seconds == 0.1
                await response.aread()
            assert stream.gather_seconds == 0.0

    run(scenario())


def test_a_connection_the_server_closed_is_not_reused(run: Run) -> None:
    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()  # then closes, though the answer allowed keep-alive

    async def scenario() -> None:
        async with server(answer_once) as (url, connections), client() as http:
            first = await http.get(url)
            await asyncio.sleep(0.1)  # the close reaches the idle pooled connection
            second = await http.get(url)
        assert (first.text, second.text) == ("ok", "ok")
        assert len(connections) == 2

    run(scenario())


def test_a_large_request_body_is_sent_whole(run: Run) -> None:
    received: list[int] = []

    async def count_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        headers = await request_head(reader)
        body = await reader.readexactly(int(headers["content-length"]))
        received.append(len(body))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()

    async def scenario() -> None:
        async with server(count_body) as (url, _), client() as http:
            answer = await http.post(url, content=b"e" * 8_000_000)
        assert answer.status_code == 204

    run(scenario())
    assert received == [8_000_000]


def test_failures_are_httpx_errors(run: Run) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request_head(reader)
        await asyncio.sleep(5)

    async def cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request_head(reader)
        writer.write(chunked_head() + chunk(CHUNK))
        await writer.drain()  # and closes mid-body

    async def scenario() -> None:
        async with client() as http:
            async with server(silent) as (url, _):
                with pytest.raises(httpx.ReadTimeout):
                    await http.get(url, timeout=httpx.Timeout(10, read=0.2))
            async with server(cut_short) as (url, _):
                with pytest.raises(httpx.RemoteProtocolError):
                    await http.get(url)
            listening = await asyncio.start_server(silent, "127.0.0.1", 0)
            port = listening.sockets[0].getsockname()[1]
            listening.close()
            await listening.wait_closed()
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{port}")

    run(scenario())


@pytest.mark.parametrize(
    ("environment", "url", "expected"),
    [
        ({}, "https://api.example:6443", None),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "https://api.example:6443", "http://proxy:3128"),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "http://api.example/api", None),
        ({"http_proxy": "http://proxy:3128"}, "http://api.example/api", "http://proxy:3128"),
        ({"ALL_PROXY": "socks5://proxy:1080"}, "https://api.example", "socks5://proxy:1080"),
        (
            {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "example,10.0.0.1"},
            "https://api.example:6443",
            None,
        ),
        (
            {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "10.0.0.1"},
            "https://10.0.0.1:443",
            None,
        ),
    ],
)
def test_the_proxy_the_environment_names(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], url: str, expected: str | None
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert environment_proxy(url) == expected
