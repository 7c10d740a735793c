"""Chains events of one resource with `follows`, as the events API expects."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta
from uuid import UUID

FOLLOWS_WINDOW = timedelta(minutes=5)
DEFAULT_MAX_RESOURCES = 100_000


Link = tuple[UUID, datetime]
"""An event a later one may follow: its id and when it occurred."""


class FollowsTracker:
    """Remembers the latest event per resource, least recently used first out.

    Memory is bounded by `max_resources` entries (about 200 bytes each); when a resource is
    forgotten its next event simply starts a new chain, and `on_evict` is told.
    An event that is never stored (rejected) is taken back with `unlink`, so no later event
    follows it.
    """

    def __init__(
        self,
        *,
        max_resources: int = DEFAULT_MAX_RESOURCES,
        window: timedelta = FOLLOWS_WINDOW,
        on_evict: Callable[[], None] | None = None,
    ) -> None:
        self._latest: OrderedDict[str, Link] = OrderedDict()
        self._max_resources = max_resources
        self._window = window
        self._on_evict = on_evict

    def __len__(self) -> int:
        return len(self._latest)

    def link(self, resource_id: str, event_id: UUID, occurred: datetime) -> Link | None:
        """Record this event and return the event it follows, or None to start a chain."""
        previous = self._latest.get(resource_id)
        if previous is not None:
            previous_id, previous_occurred = previous
            if occurred < previous_occurred:
                # Older than what was already chained: it cannot follow, nor be followed.
                return None
            self._latest.move_to_end(resource_id)
        self._latest[resource_id] = (event_id, occurred)
        if len(self._latest) > self._max_resources:
            self._latest.popitem(last=False)
            if self._on_evict is not None:
                self._on_evict()
        if previous is None or previous_id == event_id:
            return None
        return previous if occurred - previous_occurred < self._window else None

    def unlink(self, resource_id: str, event_id: UUID, followed: Link | None) -> bool:
        """Take back an event that will not be stored: when it is still the resource's
        latest, `followed` (what `link` returned for it) is again, or the chain starts
        anew. False when it is not the latest: a later event linked since may follow it."""
        latest = self._latest.get(resource_id)
        if latest is None or latest[0] != event_id:
            return False
        if followed is None:
            del self._latest[resource_id]
        else:
            self._latest[resource_id] = followed
        return True

    def in_window(self, followed: Link | None, occurred: datetime) -> Link | None:
        """`followed`, if an event at `occurred` may still follow it."""
        if followed is None or occurred - followed[1] >= self._window:
            return None
        return followed

    def remember(self, resource_id: str, event_id: UUID, occurred: datetime) -> None:
        """Seed the tracker (from a checkpoint) without producing a link."""
        self._latest[resource_id] = (event_id, occurred)
        self._latest.move_to_end(resource_id)
