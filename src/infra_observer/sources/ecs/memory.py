"""What the ECS source remembers of each task: its tags and last delivered version, bounded."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class TaskEntry:
    """One task's memory; filled in as its tags are read and its changes delivered."""

    tags: dict[str, str] | None = None
    """None until they were read."""
    version: int | None = None
    """The highest `detail.version` whose change was delivered."""


class TaskMemory:
    """An entry per task ARN, the least recently used forgotten first beyond `limit`."""

    def __init__(self, *, limit: int, on_evict: Callable[[], None]) -> None:
        self._entries: OrderedDict[str, TaskEntry] = OrderedDict()
        self._limit = limit
        self._on_evict = on_evict

    def get(self, task_arn: str) -> TaskEntry:
        """The task's entry, made the most recently used; a new one if it was not known."""
        entry = self._entries.get(task_arn)
        if entry is None:
            entry = self._entries[task_arn] = TaskEntry()
            if len(self._entries) > self._limit:
                self._entries.popitem(last=False)
                self._on_evict()
        else:
            self._entries.move_to_end(task_arn)
        return entry
