"""Why a connection to the Docker daemon ended: the reason counted, and its log line."""

from __future__ import annotations

import structlog

from infra_observer.sources.docker.client import DockerApiError, DockerUnavailableError

log = structlog.get_logger(__name__)


class StreamEndedError(Exception):
    """The daemon closed an events stream (it is stopping, or a proxy cut it)."""


def ending(exc: BaseException) -> str:
    """Log why the connection ended and return the reason (`stream_ended`, `unavailable`,
    `api_error`, `error`); anything that is not an `Exception` is raised again."""
    while isinstance(exc, ExceptionGroup):
        exc = exc.exceptions[0]
    if isinstance(exc, StreamEndedError):
        log.info("docker_stream_ended")
        return "stream_ended"
    if isinstance(exc, DockerUnavailableError):
        log.warning("docker_unavailable", error=str(exc))
        return "unavailable"
    if isinstance(exc, DockerApiError):
        log.warning("docker_api_error", status=exc.status, error=str(exc))
        return "api_error"
    if isinstance(exc, Exception):
        log.error("docker_session_failed", exc_info=exc)
        return "error"
    raise exc
