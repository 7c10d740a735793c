"""Runs one source with its own emitter for a test, and stops both in order afterwards."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from infra_observer.emitter import Emitter


class _Source(Protocol):
    async def run(self) -> None: ...


@contextlib.asynccontextmanager
async def source_with_emitter(
    source: _Source,
    emitter: Emitter,
    *,
    drain_seconds: float,
    started: Callable[[asyncio.Task[None]], Awaitable[None]] | None = None,
) -> AsyncIterator[None]:
    """Both run while the block runs; the source must still be running when it ends.

    `started` is awaited before the block, with the source's task (to wait for readiness).
    Afterwards the source is cancelled first, then the emitter drains within
    `drain_seconds`, as the daemon does.
    """
    emitter_task = asyncio.create_task(emitter.run(), name="emitter")
    source_task = asyncio.create_task(source.run(), name="source")
    try:
        if started is not None:
            await started(source_task)
        assert not source_task.done(), "the source loop stopped"
        yield
        assert not source_task.done(), "the source loop stopped"
    finally:
        source_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await source_task
        emitter.stop(drain_seconds)
        await emitter_task
