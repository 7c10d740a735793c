"""Capped exponential backoff with jitter for reconnect loops, computed by tenacity.

A base module: every source's reconnect loop uses it (and anything else that reconnects
may), so it stands alone below the components and imports nothing of the project.
"""

from __future__ import annotations

import tenacity
from tenacity.wait import wait_exponential_jitter


class Backoff:
    """Delays that grow per failed attempt, up to `maximum`; `reset` after a success."""

    def __init__(self, *, initial: float = 0.5, maximum: float = 30.0) -> None:
        self._wait = wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial)
        self._attempt = 0

    @property
    def attempt(self) -> int:
        return self._attempt

    def next_delay(self) -> float:
        self._attempt += 1
        state = tenacity.RetryCallState(
            retry_object=tenacity.AsyncRetrying(), fn=None, args=(), kwargs={}
        )
        state.attempt_number = self._attempt
        return float(self._wait(state))

    def reset(self) -> None:
        self._attempt = 0
