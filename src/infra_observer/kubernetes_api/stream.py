"""A watch stream's framing: whole lines out of its chunks, and the guard that ends it
when it goes silent."""

from __future__ import annotations

import asyncio
from typing import Any

# Watch events hold whole objects; etcd caps an object at 1.5 MiB.
MAX_LINE_BYTES = 2**21


class StalledError(Exception):
    """Nothing arrived within the inactivity timeout."""


class LineSplitter:
    """Whole lines out of a stream's chunks; a line may span several chunks."""

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self._parts: list[bytes] = []  # of the line not yet ended, joined once it ends
        self._size = 0
        self._limit = limit

    def feed(self, chunk: bytes) -> list[bytes]:
        if b"\n" not in chunk:
            self._hold(chunk)
            return []
        if self._parts:
            chunk = b"".join((*self._parts, chunk))
            self._parts, self._size = [], 0
        lines = chunk.split(b"\n")
        self._hold(lines.pop())
        return [line for line in lines if line]

    def rest(self) -> bytes:
        rest = b"".join(self._parts)
        self._parts, self._size = [], 0
        return rest

    def _hold(self, part: bytes) -> None:
        if not part:
            return
        self._parts.append(part)
        self._size += len(part)
        if self._size > self._limit:
            # A ValueError, as for any undecodable stream: the watch is reopened.
            raise ValueError(f"a watch event is longer than {self._limit} bytes")


class StallGuard:
    """`asyncio.timeout` that fires when the stream stays silent while a line is awaited,
    and reports its expiry as a stall.

    Marking a wait costs a clock read: the one timer re-arms itself lazily, once per
    `seconds` at most, instead of being rescheduled for every line. Other timeouts are
    `TimeoutError`s too; only this one means "silent stream".
    """

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._timeout = asyncio.timeout(None)
        self._loop = asyncio.get_running_loop()
        self._waiting_since: float | None = None
        self._check: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        """A line is awaited from now on."""
        self._waiting_since = self._loop.time()

    def disarm(self) -> None:
        """A line is being handled (it may wait on a full emitter queue: not a stall)."""
        self._waiting_since = None

    def _on_check(self) -> None:
        since = self._waiting_since
        now = self._loop.time()
        if since is not None and now - since >= self._seconds:
            self._timeout.reschedule(now)  # expire: cancels the watch like any timeout
            return
        next_check = (since if since is not None else now) + self._seconds
        self._check = self._loop.call_at(next_check, self._on_check)

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()
        self._check = self._loop.call_at(self._loop.time() + self._seconds, self._on_check)

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if self._check is not None:
            self._check.cancel()
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError as error:
            if self._timeout.expired():
                raise StalledError from error
            raise
        return False
