"""Helpers shared by the ECS integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from infra_observer.errors import RetryableDeliveryError
from infra_observer.events.model import Event

# Generous: the machine is shared; a wait that ends early is what the tests rely on.
WAIT_SECONDS = 90


class ListSink:
    """Collects delivered batches; while `down`, every send fails as a connection error would."""

    name = "list"

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.down = False
        self.failed_sends = 0

    async def send(self, batch: Sequence[Event]) -> None:
        if self.down:
            self.failed_sends += 1
            raise RetryableDeliveryError("sink down (test)")
        self.events.extend(batch)

    async def check(self) -> str:
        return "list"

    async def aclose(self) -> None:
        return None


async def eventually(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll until `condition` holds; the bound only keeps a broken test from hanging."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    while not await condition():
        assert loop.time() < deadline, f"still waiting for: {what}"
        await asyncio.sleep(0.1)
