"""SQS messages of the ECS source: their order within a batch, and what becomes of each."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

from infra_observer.errors import InputError
from infra_observer.sources.ecs.translate import TaskStateChange, parse_message

_LONGEST_RETRY_EXPONENT = 16

Parsed = tuple[dict[str, Any], TaskStateChange | InputError]
"""A received message with what its body holds, or why it holds nothing usable."""


class Ack(enum.Enum):
    """What to do with a handled message."""

    DELETE = "delete"
    RETRY = "retry"
    """Make the message visible again after a delay: it could not be handled yet."""
    LEAVE = "leave"
    """Let its visibility lapse (dead-letter policy, or the process is stopping)."""


def in_task_order(messages: Sequence[dict[str, Any]]) -> list[Parsed]:
    """Parse a batch and order each task's changes by version (a batch may hold several)."""
    parsed: list[Parsed] = []
    for message in messages:
        try:
            parsed.append((message, parse_message(message.get("Body", ""))))
        except InputError as exc:
            parsed.append((message, exc))

    def version(item: Parsed) -> int:
        change = item[1]
        if isinstance(change, InputError) or change.version is None:
            return -1
        return change.version

    return sorted(parsed, key=version)


def receive_count(message: Mapping[str, Any]) -> int:
    """How many times SQS handed the message out, this time included."""
    try:
        return int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1))
    except ValueError:
        return 1


def retry_delay(message: Mapping[str, Any], *, longest: float) -> int:
    """Seconds before a message that could not be handled yet comes back: 1, 2, 4 … `longest`."""
    attempt = min(receive_count(message), _LONGEST_RETRY_EXPONENT)
    return int(min(2 ** (attempt - 1), longest))
