"""The sockets and TLS under every httpx client (events API, Kubernetes, Docker): one, shared.

httpx reaches the network through httpcore, which on asyncio goes through anyio by
default: every read opens a cancel scope (even without a timeout), and TLS runs in Python
over memory buffers, one TLS record per read. This is a network backend on httpcore's
public `AsyncNetworkBackend` interface, a plain asyncio protocol: TLS is the event loop's
(uvloop's is in C), a read returns everything received so far (up to the size asked for),
and reading is paused whenever no read is waiting, so what arrives meanwhile waits and is
decrypted in one go (a watch makes use of that with `gathering_reads`). The three clients
share it, so it is a module of its own rather than part of any of them; what it pays is in
docs/performance.md ("Speed tricks: what each one pays").
`infra_observer.tuning.httpx_network_backend` puts it under httpx's transport, and
`environment_proxy` picks the proxy, if any, that a client reaches its server through.
"""

from __future__ import annotations

import asyncio
import select
import ssl
import urllib.request
from collections.abc import Coroutine, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import urlsplit

import httpcore
import httpx

from infra_observer.tuning.httpx_network_backend import with_network_backend
from infra_observer.tuning.tls_reads_held_in_socket import (
    reads_held_in_socket,
    received_encrypted,
)

_SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class _Protocol(asyncio.Protocol):
    """Collects what the transport receives; reads it only while a read waits for it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.at_eof = False
        self.error: BaseException | None = None
        self._data_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._writing_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not subclasses of asyncio's).
        self.transport = cast(asyncio.Transport, transport)
        self.transport.pause_reading()  # until somebody reads

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        _wake(self._data_waiter)

    def eof_received(self) -> bool:
        self.at_eof = True
        _wake(self._data_waiter)
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.at_eof = True
        self.error = exc
        _wake(self._data_waiter)
        _wake(self._drain_waiter)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        _wake(self._drain_waiter)

    async def wait_for_data(self) -> None:
        transport = self.transport
        assert transport is not None
        self._data_waiter = asyncio.get_running_loop().create_future()
        transport.resume_reading()
        try:
            await self._data_waiter
        finally:
            self._data_waiter = None
            if not transport.is_closing():
                transport.pause_reading()

    async def drain(self) -> None:
        if self._writing_paused and not self.at_eof:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._tls = transport.get_extra_info("ssl_object") is not None
        self.gather_seconds = 0.0
        """Before a read waits for the network, what arrives may gather this long."""

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        if self.gather_seconds and not protocol.buffer and not protocol.at_eof:
            await self._gather()
        if not protocol.buffer and not protocol.at_eof:  # the connection may be lost by now
            try:
                if timeout is None:
                    await protocol.wait_for_data()
                else:
                    async with asyncio.timeout(timeout):
                        await protocol.wait_for_data()
            except TimeoutError as exc:
                raise httpcore.ReadTimeout(f"nothing received within {timeout} s") from exc
        buffer = protocol.buffer
        if not buffer:
            if protocol.error is not None:
                raise httpcore.ReadError(str(protocol.error)) from protocol.error
            return b""  # the peer closed the connection
        data = bytes(buffer[:max_bytes])
        del buffer[:max_bytes]
        return data

    async def _gather(self) -> None:
        """Let what arrives wait in the socket, unread, for `gather_seconds`."""
        if not self._tls:
            await asyncio.sleep(self.gather_seconds)
            return
        if received_encrypted(self._transport):
            return  # received already, still encrypted: no reason to wait
        with reads_held_in_socket(self._transport):
            await asyncio.sleep(self.gather_seconds)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._transport.write(buffer)
        try:
            async with asyncio.timeout(timeout):
                await self._protocol.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(f"could not send within {timeout} s") from exc
        if self._protocol.error is not None:
            raise httpcore.WriteError(str(self._protocol.error)) from self._protocol.error

    async def aclose(self) -> None:
        if not self._tls:
            self._transport.close()
        else:
            # No TLS close handshake, as httpcore's own streams do: its reply may never
            # come (the server is gone), and meanwhile the socket would stay open.
            self._transport.abort()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError as exc:
            self._transport.close()
            raise httpcore.ConnectTimeout(f"TLS handshake not done within {timeout} s") from exc
        except (OSError, ssl.SSLError) as exc:
            self._transport.close()
            raise httpcore.ConnectError(str(exc)) from exc
        if transport is None:  # only for a server-side or closed transport
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        self._protocol.transport = transport
        transport.pause_reading()
        return AsyncioStream(transport, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # Asked of idle pooled connections: readable means the server closed it (or
            # sent what nobody asked for), so it is not reused. Reading is paused, so the
            # socket itself is polled.
            return bool(self._protocol.buffer) or self._protocol.at_eof or self._socket_readable()
        name = {"client_addr": "sockname", "server_addr": "peername"}.get(info, info)
        return self._transport.get_extra_info(name)

    def _socket_readable(self) -> bool:
        sock = self._transport.get_extra_info("socket")
        descriptor = sock.fileno() if sock is not None else -1
        if descriptor < 0:
            return True
        poll = select.poll()
        poll.register(descriptor, select.POLLIN)
        return bool(poll.poll(0))


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        local = (local_address, 0) if local_address else None
        connecting = asyncio.get_running_loop().create_connection(
            _Protocol, host, port, local_addr=local
        )
        return await _connected(connecting, timeout=timeout, socket_options=socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        connecting = asyncio.get_running_loop().create_unix_connection(_Protocol, path)
        return await _connected(connecting, timeout=timeout, socket_options=socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _connected(
    connecting: Coroutine[Any, Any, tuple[asyncio.Transport, _Protocol]],
    *,
    timeout: float | None,
    socket_options: Iterable[_SocketOption] | None,
) -> AsyncioStream:
    try:
        async with asyncio.timeout(timeout):
            transport, protocol = await connecting
    except TimeoutError as exc:
        raise httpcore.ConnectTimeout(f"no connection within {timeout} s") from exc
    except OSError as exc:
        raise httpcore.ConnectError(str(exc)) from exc
    sock = transport.get_extra_info("socket")
    for option in socket_options or ():
        sock.setsockopt(*option)
    return AsyncioStream(transport, protocol)


def asyncio_transport(
    *,
    ssl_context: ssl.SSLContext,
    limits: httpx.Limits,
    uds: str | None = None,
    proxy: str | None = None,
) -> httpx.AsyncHTTPTransport:
    """httpx's own transport (its request and error mapping), on `AsyncioBackend`; with
    `uds`, every connection goes to that unix socket. Through a proxy, httpx's standard
    transport: proxies are rare, and it knows them all (HTTP, HTTPS, SOCKS)."""
    if proxy is not None:
        return httpx.AsyncHTTPTransport(verify=ssl_context, limits=limits, proxy=proxy)
    return with_network_backend(
        backend=AsyncioBackend(), ssl_context=ssl_context, limits=limits, uds=uds
    )


def environment_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`,
    less `NO_PROXY`), as curl and kubectl pick it. httpx reads these only for clients it
    builds the transport of, and each client here talks to one server: so it is looked up
    once, for that server."""
    proxies = urllib.request.getproxies()
    parts = urlsplit(url)
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy is None or urllib.request.proxy_bypass(parts.netloc):
        return None
    return proxy


@contextmanager
def gathering_reads(response: httpx.Response, seconds: float) -> Iterator[None]:
    """Within this block, a read of the response's connection that would wait for the
    network first lets what arrives gather for `seconds`: a stream of small messages is
    then decrypted, parsed and handled in bursts instead of one wake-up each. The first
    message after a quiet spell still comes at once. Nothing changes on other transports.
    """
    stream = response.extensions.get("network_stream")
    if not isinstance(stream, AsyncioStream):
        yield
        return
    stream.gather_seconds = seconds
    try:
        yield
    finally:
        stream.gather_seconds = 0.0  # the connection may serve other requests next
