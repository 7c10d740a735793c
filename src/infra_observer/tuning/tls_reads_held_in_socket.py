"""While a read gathers, what arrives on a TLS connection stays in the socket, unread.

A paused TLS transport (asyncio's and uvloop's alike) goes on reading its socket and keeps
what it reads, still encrypted, until its reader resumes: a wake-up and a read for every
message while the watch's reads gather. With its read-buffer limit lowered to one byte,
its first message pauses the socket itself, and the rest waits in the kernel; with the
default limits back, the socket is read in one go.

Relies on: `get_read_buffer_size()` and `set_read_buffer_limits()` of the TLS transports of
asyncio (`asyncio.sslproto._SSLProtocolTransport`) and uvloop, which the documented
`asyncio.ReadTransport` interface does not have, and on a limit of one byte pausing the
socket. If either loop drops the methods or reads on regardless,
`tests/unit/test_transport.py::test_gathering_over_tls_leaves_what_arrives_unread_in_the_socket`
fails (it runs on both loops).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


def received_encrypted(transport: asyncio.Transport) -> bool:
    """The TLS transport holds bytes read from the socket that are not decrypted yet."""
    return bool(transport.get_read_buffer_size())  # type: ignore[attr-defined]


@contextmanager
def reads_held_in_socket(transport: asyncio.Transport) -> Iterator[None]:
    """Within this block, the TLS transport reads at most one message from its socket."""
    limited = not transport.is_closing()
    if limited:
        transport.set_read_buffer_limits(high=1, low=0)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if limited and not transport.is_closing():
            transport.set_read_buffer_limits()  # type: ignore[attr-defined]
