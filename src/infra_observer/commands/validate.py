"""`infra-observer validate FILE`: check JSON lines of events against the catalog and limits.

Reads what the stdout sink writes, or events read back from the events API (whose
server-added `received` field is ignored). Every line is judged on its own, and every
problem is said in plain words: what is wrong, where, and what was expected.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import orjson
import pydantic
from pydantic_core import ErrorDetails

from infra_observer.events.model import WireEvent, limit_problems, parse_wire_event

# Fields the events API adds to what it stores; not part of an event as sent.
SERVER_FIELDS = frozenset({"received"})
_FIELDS = ", ".join(WireEvent.model_fields)
# A value quoted in a message is cut to this length: the line number leads to the rest.
_SHOWN_CHARACTERS = 60
_TIMESTAMP_RULE = "{where} {value} is not an RFC 3339 timestamp (e.g. 2026-03-01T12:00:00Z)"
# Pydantic's error types, each as a sentence; other types keep pydantic's own message.
_RULES: Mapping[str, str] = {
    "missing": "required field {where!r} is missing",
    "extra_forbidden": "field {where!r} is not part of an event (its fields: " + _FIELDS + ")",
    "string_type": "{where} must be a string, not {kind}",
    "dict_type": "{where} must be a JSON object, not {kind}",
    "list_type": "{where} must be a JSON array, not {kind}",
    "timezone_aware": "{where} {value} has no time zone (add one, e.g. Z for UTC)",
    "uuid_parsing": "{where} {value} is not a UUID",
    "uuid_type": "{where} {value} is not a UUID",
}


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
        return [_not_json(raw, exc)]
    if not isinstance(decoded, dict):
        return [f"not an event: {_a(decoded, json_word=True)}, expected a JSON object"]
    sent = {key: value for key, value in decoded.items() if key not in SERVER_FIELDS}
    try:
        event = parse_wire_event(orjson.dumps(sent))
    except pydantic.ValidationError as exc:
        return [_describe(error) for error in exc.errors(include_url=False)]
    return [*limit_problems(event), *check_against_catalog(event)]


def _not_json(raw: bytes, error: orjson.JSONDecodeError) -> str:
    """Why a line is not JSON, in the standard library's plainer words where it agrees."""
    line = raw.rstrip(b"\r\n")  # the line's end is not part of what was cut short
    try:
        text = line.decode()
    except UnicodeDecodeError as exc:
        return f"not JSON: not UTF-8 (byte 0x{line[exc.start]:02x} at column {exc.start + 1})"
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        # Some of its messages end in "at", made to be followed by the position.
        return f"not JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}"
    except RecursionError:
        pass
    # What only orjson refuses, as the events API does: NaN, Infinity, lone surrogates,
    # nesting deeper than its limit.
    return f"not JSON: {error.msg} at column {error.colno}"


def _json_type(value: object) -> str:
    """The JSON type of a decoded value: object, array, string, number, or the literal."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _a(value: object, *, json_word: bool = False) -> str:
    """E.g. "an array", or "a JSON array" with `json_word`; a literal alone: "null"."""
    kind = _json_type(value)
    if kind in ("null", "true", "false"):
        return kind
    if json_word:
        return f"a JSON {kind}"
    return f"an {kind}" if kind in ("array", "object") else f"a {kind}"


def _describe(error: ErrorDetails) -> str:
    rule = _RULES.get(error["type"])
    if rule is None:
        timestamp = error["type"].startswith(("datetime_", "date_"))
        rule = _TIMESTAMP_RULE if timestamp else "{where}: {msg}"
    value = error.get("input")
    return rule.format(
        where=_where(error["loc"]),
        kind=_a(value),
        value=_shown(value),
        msg=error["msg"],
    )


def _where(location: tuple[int | str, ...]) -> str:
    """A field's path as the other messages name it: `related[0] label 'prefect.resource.id'`."""
    if not location:
        return "the event"
    field, *rest = location
    where = str(field) + "".join(f"[{part}]" for part in rest if isinstance(part, int))
    labels = [part for part in rest if isinstance(part, str)]
    return f"{where} label {labels[0]!r}" if labels else where


def _shown(value: object) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) > _SHOWN_CHARACTERS:
        return text[: _SHOWN_CHARACTERS - 3] + "..."
    return text


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
            return "no events found: the input is empty or blank"
        noun = "event" if self.checked == 1 else "events"
        valid = self.checked - self.failed
        return f"{self.checked} {noun} checked: {valid} valid, {self.failed} invalid"
