"""`infra-observer validate FILE`: check JSON lines of events against the catalog and limits.

Reads what the stdout sink writes, or events read back from the events API (whose
server-added `received` field is ignored). Every line is judged on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import orjson
import pydantic
from pydantic_core import ErrorDetails

from infra_observer.events.model import limit_problems, parse_wire_event

# Fields the events API adds to what it stores; not part of an event as sent.
SERVER_FIELDS = frozenset({"received"})


@dataclass(frozen=True, slots=True)
class LineReport:
    line: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_line(raw: bytes) -> list[str]:
    """Every problem of one JSON line holding one event; empty when it conforms."""
    # Imported on use: `cli` imports this module for every command, the daemon's too.
    from infra_observer.events.conformance import check_against_catalog

    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return [f"not valid JSON: {exc}"]
    if not isinstance(decoded, dict):
        return [f"not a JSON object but a JSON {type(decoded).__name__}"]
    sent = {key: value for key, value in decoded.items() if key not in SERVER_FIELDS}
    try:
        event = parse_wire_event(orjson.dumps(sent))
    except pydantic.ValidationError as exc:
        return [_describe(error) for error in exc.errors(include_url=False)]
    return [*limit_problems(event), *check_against_catalog(event)]


def _describe(error: ErrorDetails) -> str:
    location = ".".join(str(part) for part in error["loc"]) or "event"
    return f"{location}: {error['msg']}"


def check_lines(lines: Iterable[bytes]) -> Iterator[LineReport]:
    """A report per non-blank line, numbered from 1 as in the file."""
    for number, raw in enumerate(lines, start=1):
        if raw.strip():
            yield LineReport(line=number, problems=tuple(check_line(raw)))


@dataclass(slots=True)
class Summary:
    checked: int = 0
    failed: int = 0

    def add(self, report: LineReport) -> None:
        self.checked += 1
        self.failed += 0 if report.ok else 1

    @property
    def ok(self) -> bool:
        # An empty input proves nothing: a producer that wrote nothing must not pass.
        return self.checked > 0 and self.failed == 0

    def text(self) -> str:
        if self.checked == 0:
            return "no events found"
        passed = self.checked - self.failed
        return f"{self.checked} events checked: {passed} conform, {self.failed} failed"
