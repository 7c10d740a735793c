"""Logging set-up: structlog key/value lines on stderr, credentials in URLs masked.

JSON lines (or console rendering on a terminal), with the standard-library logs of
dependencies sent through the same processors; credentials written into URLs are masked in
every line, whoever logged it. A base module: configured once by `cli` before anything else
runs, and every layer logs through structlog without importing it; it imports only `config`.
"""

from __future__ import annotations

import io
import logging
import sys
from typing import TextIO

import orjson
import structlog

from infra_observer.config import LogSettings, redact_credentials

# Per-request INFO lines from HTTP clients would drown the daemon's own logs.
_QUIET_LIBRARIES = {
    "aiobotocore": logging.WARNING,
    "botocore": logging.WARNING,
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
}


def _orjson_dumps(value: object, **_: object) -> str:
    return orjson.dumps(value, default=str).decode()


def redact_urls(
    _logger: object, _method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Mask `user:password@` in every string field: URLs reach logs in error messages too."""
    for key, value in event_dict.items():
        if type(value) is str and "@" in value:
            event_dict[key] = redact_credentials(value)
    return event_dict


def _redacted_traceback(sio: TextIO, exc_info: structlog.typing.ExcInfo) -> None:
    text = io.StringIO()
    structlog.dev.plain_traceback(text, exc_info)
    sio.write(redact_credentials(text.getvalue()))


def configure_logging(settings: LogSettings, *, stream: TextIO | None = None) -> None:
    stream = stream if stream is not None else sys.stderr
    level = logging.getLevelNamesMapping()[settings.level.upper()]
    use_console = settings.format == "console" or (settings.format == "auto" and stream.isatty())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: structlog.typing.Processor
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(exception_formatter=_redacted_traceback)
    else:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    shared.append(redact_urls)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        # Calls below the level are no-ops decided once, not a trip through the processors:
        # the watch path logs at debug for every event.
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name, floor in _QUIET_LIBRARIES.items():
        logging.getLogger(name).setLevel(max(level, floor))
