"""How many messages the ECS source handles at once, and one at a time per task."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class KeyedLocks:
    """One lock per key, dropped when nobody holds or waits for it (bounded by concurrency)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Slots:
    """How many more messages may be handled at once."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._freed = asyncio.Event()

    async def wait_free(self) -> int:
        """Wait until at least one slot is free; return how many are."""
        while self._free == 0:
            self._freed.clear()
            await self._freed.wait()
        return self._free

    def take(self) -> None:
        self._free -= 1

    def release(self) -> None:
        self._free += 1
        self._freed.set()
