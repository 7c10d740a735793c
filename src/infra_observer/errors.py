"""The project's error tree; library errors are mapped onto these at the boundaries.

A base module: every layer raises or catches these (a command, the app, each component and
shared service), so it stands alone at the bottom and imports nothing of the project.
"""

from __future__ import annotations


class InfraObserverError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(InfraObserverError):
    """The configuration is invalid or incomplete; the message names the variable and the fix."""


class InputError(InfraObserverError):
    """An observed object (pod, container event, SQS message) is malformed."""


class DeliveryError(InfraObserverError):
    """A batch could not be delivered to the sink."""

    retry_after: float | None = None


class RetryableDeliveryError(DeliveryError):
    """A passing failure: connection refused, timeout, 408, 429 or 5xx."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class MisconfiguredSinkError(RetryableDeliveryError):
    """401, 403 or 404: retried slowly because only an operator can fix it."""


class UnexpectedStatusError(RetryableDeliveryError):
    """A status the events API does not give for a batch (405, 407, 409, a proxy's 400...):
    nothing says the content is wrong, so the batch is held and retried like a 5xx."""


class RejectedBatchError(DeliveryError):
    """The sink refused the batch's content (422, or 400 with the Prefect server's own
    answer); splitting it isolates the culprit."""

    def __init__(self, message: str, *, status: int, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class BatchTooLargeError(RejectedBatchError):
    """413 from something in front of the API: halving the batch fits it under the limit;
    only an event refused on its own is rejected."""


class SourceError(InfraObserverError):
    """A source cannot go on (for example a permission it lacks)."""
