"""The emitter's backlog, on both event loops the project runs on (asyncio and uvloop)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from infra_observer.emitter.backlog import Backlog
from tests.unit.conftest import Run

# Long enough never to be hit by a working backlog, short enough to fail fast on a hang.
HANG_SECONDS = 5.0


@dataclass
class Item:
    name: str
    size: int = 10


def backlog(*, limit: int = 100, events: int = 3, size: int = 1_000) -> Backlog[Item]:
    return Backlog(limit=limit, batch_events=events, batch_bytes=size)


def test_a_lone_item_leaves_when_its_deadline_passes(run: Run) -> None:
    async def scenario() -> None:
        pending = backlog()
        loop = asyncio.get_running_loop()
        # Many rounds: a timer that fires a fraction of a millisecond early must still end
        # the wait (uvloop's timers have millisecond resolution).
        for round_ in range(30):
            await pending.put(Item(f"lone-{round_}"))
            async with asyncio.timeout(HANG_SECONDS):
                await pending.wait_for_batch(loop.time() + 0.003)
            assert [item.name for item in pending.take()] == [f"lone-{round_}"]

    run(scenario())


def test_a_full_batch_ends_the_wait_before_the_deadline(run: Run) -> None:
    async def scenario() -> None:
        pending = backlog(events=3)
        loop = asyncio.get_running_loop()
        await pending.put(Item("a"))

        async def producer() -> None:
            await asyncio.sleep(0.01)
            await pending.put(Item("b"))
            await pending.put(Item("c"))

        task = asyncio.ensure_future(producer())
        async with asyncio.timeout(HANG_SECONDS):
            await pending.wait_for_batch(loop.time() + 3600)
        await task
        assert [item.name for item in pending.take()] == ["a", "b", "c"]

    run(scenario())


def test_batches_keep_order_and_respect_count_and_bytes(run: Run) -> None:
    async def scenario() -> None:
        pending = backlog(events=3, size=25)
        for name, size in [("big", 40), ("a", 10), ("b", 10), ("c", 10), ("d", 1), ("e", 1)]:
            await pending.put(Item(name, size))
        # An item larger than a batch still goes, alone; the others fill up to the bounds.
        assert [item.name for item in pending.take()] == ["big"]
        assert [item.name for item in pending.take()] == ["a", "b"]
        assert [item.name for item in pending.take()] == ["c", "d", "e"]
        assert pending.take() == []
        assert len(pending) == 0

    run(scenario())


def test_put_waits_while_full_and_resumes_when_a_batch_is_taken(run: Run) -> None:
    async def scenario() -> None:
        pending = backlog(limit=2, events=2)
        await pending.put(Item("a"))
        await pending.put(Item("b"))
        assert pending.full
        blocked = asyncio.ensure_future(pending.put(Item("c")))
        await asyncio.sleep(0.01)
        assert not blocked.done()
        assert [item.name for item in pending.take()] == ["a", "b"]
        async with asyncio.timeout(HANG_SECONDS):
            await blocked
        assert [item.name for item in pending.take_all()] == ["c"]

    run(scenario())


def test_waiting_for_the_first_item_ends_on_an_item_or_on_stop(run: Run) -> None:
    async def scenario() -> None:
        pending = backlog()
        stopping = asyncio.Event()
        waiter = asyncio.ensure_future(pending.wait_for_first(stopping))
        await asyncio.sleep(0.01)
        await pending.put(Item("a"))
        async with asyncio.timeout(HANG_SECONDS):
            assert await waiter is True
        pending.take_all()

        waiter = asyncio.ensure_future(pending.wait_for_first(stopping))
        await asyncio.sleep(0.01)
        stopping.set()
        pending.wake()
        async with asyncio.timeout(HANG_SECONDS):
            assert await waiter is False

    run(scenario())


def test_a_batch_fits_its_bytes_as_the_json_array_it_is_sent_as(run: Run) -> None:
    async def scenario() -> None:
        pending = backlog(events=10, size=30)
        for name in "abcd":
            await pending.put(Item(name, 10))
        # Three items are 30 bytes, but as "[a,b,c]" 34: only two fit.
        assert [item.name for item in pending.take()] == ["a", "b"]
        assert [item.name for item in pending.take()] == ["c", "d"]

    run(scenario())


def test_a_full_backlog_is_news_once_until_a_take_empties_it(run: Run) -> None:
    async def scenario() -> None:
        pending = backlog(limit=2, events=1)
        await pending.put(Item("a"))
        await pending.put(Item("b"))
        assert pending.newly_full() is True
        assert pending.newly_full() is False
        # A batch taken with items left behind does not end the episode.
        assert [item.name for item in pending.take()] == ["a"]
        assert pending.newly_full() is False
        assert [item.name for item in pending.take()] == ["b"]
        assert pending.newly_full() is True

    run(scenario())
