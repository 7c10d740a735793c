"""The emitter's bounded, ordered backlog, from which whole batches are taken.

The intake adds events (and waits while it is full: backpressure); the delivery takes
whole batches. Unlike an `asyncio.Queue` read item by item, the delivery loop is woken once
per batch, not once per event: when the first event arrives, and when a batch is full.
Between the two, events are appended without waking anything, so the cost of a wake-up is
paid per batch.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, Protocol, TypeVar


class Sized(Protocol):
    @property
    def size(self) -> int: ...


Item = TypeVar("Item", bound=Sized)


class Backlog(Generic[Item]):
    """FIFO of at most `limit` items; `put` waits while it is full (backpressure)."""

    def __init__(
        self,
        *,
        limit: int,
        batch_events: int,
        batch_bytes: int,
    ) -> None:
        self._items: deque[Item] = deque()
        self._bytes = 0
        self._limit = limit
        self._batch_events = batch_events
        self._batch_bytes = batch_bytes
        self._arrived = asyncio.Event()  # an item came into an empty backlog
        self._batch_ready = asyncio.Event()  # a whole batch is waiting
        self._space = asyncio.Event()  # the backlog went from full to not full
        self._space.set()
        self._full_reported = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        return len(self._items) >= self._limit

    def oldest(self) -> Item:
        return self._items[0]

    def newly_full(self) -> bool:
        """True on the first call since the backlog was last emptied by `take`: a backlog
        that stays full is reported once, not once per item waiting for space."""
        if self._full_reported:
            return False
        self._full_reported = True
        return True

    async def put(self, item: Item) -> None:
        while self.full:
            self._space.clear()
            await self._space.wait()
        self.add(item)

    def add(self, item: Item) -> None:
        """Append without waiting; only when not `full` (`put` waits for space)."""
        self._items.append(item)
        self._bytes += item.size
        if len(self._items) == 1:
            self._arrived.set()
        if len(self._items) >= self._batch_events or self._bytes >= self._batch_bytes:
            self._batch_ready.set()

    def wake(self) -> None:
        """Make `wait_for_first` look at its `stopping` event again."""
        self._arrived.set()

    async def wait_for_first(self, stopping: asyncio.Event) -> bool:
        """Until an item is waiting (True) or `stopping` is set with none (False); whoever
        sets `stopping` calls `wake`."""
        while not self._items:
            if stopping.is_set():
                return False
            self._arrived.clear()
            await self._arrived.wait()
        return True

    async def wait_for_batch(self, deadline: float) -> None:
        """Until a whole batch is waiting, or the loop's clock reaches `deadline`."""
        expired = False

        def expire() -> None:
            # A flag, not a clock comparison: uvloop's timers have millisecond resolution
            # and may fire a fraction of a millisecond before `deadline` by its clock.
            nonlocal expired
            expired = True
            self._batch_ready.set()

        # A timer that sets the event, not a timeout: an exception per batch would leave
        # reference cycles (traceback, frames) for the garbage collector.
        timer = asyncio.get_running_loop().call_at(deadline, expire)
        try:
            while len(self._items) < self._batch_events and self._bytes < self._batch_bytes:
                self._batch_ready.clear()
                await self._batch_ready.wait()
                if expired:
                    return
        finally:
            timer.cancel()

    def take(self) -> list[Item]:
        """The oldest items, up to one batch by count and bytes (always at least one).

        The bytes are those of the JSON array the batch is sent as: the items, a comma
        between each two, and the brackets.
        """
        batch: list[Item] = []
        size = 0
        items = self._items
        while items and len(batch) < self._batch_events:
            item = items[0]
            if batch and size + item.size + len(batch) + 2 > self._batch_bytes:
                break
            batch.append(items.popleft())
            size += item.size
        self._bytes -= size
        self._space.set()
        if not items:
            self._full_reported = False
        return batch

    def take_all(self) -> list[Item]:
        items = list(self._items)
        self._items.clear()
        self._bytes = 0
        self._space.set()
        return items
