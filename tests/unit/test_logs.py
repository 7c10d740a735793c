"""What reaches the log stream: credentials in URLs masked, whoever logged them."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
import structlog

from infra_observer.config import LogSettings
from infra_observer.logs import configure_logging

URL = "http://admin:hunter2@prefect.internal/api"


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers, root.level = handlers, level
    structlog.reset_defaults()


@pytest.mark.usefixtures("restored_logging")
def test_json_lines_mask_url_credentials_in_fields_messages_and_tracebacks() -> None:
    stream = io.StringIO()
    configure_logging(LogSettings(level="info", format="json"), stream=stream)
    log = structlog.get_logger("test")
    log.warning("delivery_failed", error=f"POST {URL}/events failed", attempt=1)
    logging.getLogger("httpx").warning("request to %s refused", URL)
    try:
        raise RuntimeError(f"cannot reach {URL}")
    except RuntimeError:
        log.exception("daemon_failed")
    text = stream.getvalue()
    assert "hunter2" not in text
    lines = [orjson.loads(line) for line in text.splitlines()]
    assert lines[0]["error"] == "POST http://***@prefect.internal/api/events failed"
    assert lines[1]["event"] == "request to http://***@prefect.internal/api refused"
    assert "cannot reach http://***@prefect.internal/api" in lines[2]["exception"]


@pytest.mark.usefixtures("restored_logging")
def test_console_lines_mask_url_credentials_in_tracebacks() -> None:
    stream = io.StringIO()
    configure_logging(LogSettings(level="info", format="console"), stream=stream)
    try:
        raise RuntimeError(f"cannot reach {URL}")
    except RuntimeError:
        structlog.get_logger("test").exception("daemon_failed", url=URL)
    text = stream.getvalue()
    assert "hunter2" not in text
    assert "cannot reach http://***@prefect.internal/api" in text


@pytest.mark.usefixtures("restored_logging")
@pytest.mark.parametrize("level", ["INFO", "warn", "Fatal"])
def test_any_accepted_level_configures_logging(level: str) -> None:
    stream = io.StringIO()
    configure_logging(LogSettings(level=level), stream=stream)  # type: ignore[arg-type]
    structlog.get_logger("test").critical("shown")
    assert "shown" in stream.getvalue()
