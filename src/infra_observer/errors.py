"""The project's own exceptions; library errors are mapped onto these at the boundaries."""

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


class RejectedBatchError(DeliveryError):
    """The sink refused the batch's content (400, 413, 422); splitting it isolates the culprit."""

    def __init__(self, message: str, *, status: int, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class SourceError(InfraObserverError):
    """A source cannot go on (for example a permission it lacks)."""
