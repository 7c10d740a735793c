"""An httpx transport whose connections go through a network backend of our choosing.

httpx takes no network backend: `httpx.AsyncHTTPTransport` builds its httpcore connection
pool in its constructor and keeps it in the private attribute `_pool`, on httpcore's
default backend (anyio on asyncio). This replaces that pool with one built the same way
(the same SSL context, limits and unix socket) on the backend given, and keeps the rest of
httpx's transport: its request and response mapping and its error mapping.

Relies on: the private attribute `httpx.AsyncHTTPTransport._pool`, and on the transport
reading it for every request. If httpx renames or stops reading it, the assignment below
still succeeds but nothing uses the pool: connections silently go back to the default
backend. `tests/unit/test_transport.py::test_every_connection_is_on_the_event_loops_own_sockets`
fails then.
"""

from __future__ import annotations

import ssl

import httpcore
import httpx


def with_network_backend(
    *,
    backend: httpcore.AsyncNetworkBackend,
    ssl_context: ssl.SSLContext,
    limits: httpx.Limits,
    uds: str | None = None,
) -> httpx.AsyncHTTPTransport:
    """httpx's own transport (no proxy), its connections made by `backend`; with `uds`,
    every connection goes to that unix socket."""
    transport = httpx.AsyncHTTPTransport(verify=ssl_context, limits=limits, uds=uds)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        uds=uds,
        network_backend=backend,
    )
    return transport
