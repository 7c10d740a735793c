"""An on-disk write-ahead spool, so events accepted from sources survive a crash or restart.

Layout of the spool directory:
- `segment-<n>.jsonl`: accepted events, one JSON object a line, in the order accepted;
- `cursor.json`: how many records have been settled (delivered or rejected), as a segment
  number and a line within it; written atomically after every batch;
- `checkpoint.json`: the last delivered event per resource (see `Checkpoint`).

Delivery is in order, so the settled records are always a prefix; whole settled segments are
deleted. A record is flushed to the kernel before `submit` returns, so a killed process loses
nothing; a machine crash may lose what the kernel had not yet written out.

A record that cannot be read back (damaged on disk) is logged, counted in `unreadable` and
skipped; it is settled together with the readable record before it, so the cursor moves past
it and it is neither read again nor holds back the records after it.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import structlog

from infra_observer.errors import InputError
from infra_observer.events.model import Event, parse_wire_event

log = structlog.get_logger(__name__)

SEGMENT_BYTES = 8 * 1024 * 1024
_SEGMENT_PREFIX = "segment-"
_SEGMENT_SUFFIX = ".jsonl"


@dataclass(frozen=True, slots=True)
class SpooledEvent:
    event: Event
    source: str


@dataclass(slots=True)
class _Segment:
    number: int
    path: Path
    records: int
    size: int


def write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_suffix(path.suffix + ".partial")
    with partial.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    partial.replace(path)
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """Write out the directory's entries: until then a machine crash can undo a rename."""
    descriptor = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class Spool:
    """Append-only segments plus a settled cursor. Not thread-safe: one event loop uses it."""

    def __init__(self, directory: Path, *, segment_bytes: int = SEGMENT_BYTES) -> None:
        self._directory = directory
        self._segment_bytes = segment_bytes
        self._segments: deque[_Segment] = deque()
        self._settled_in_first = 0
        self._writer: IO[bytes] | None = None
        self._cursor_path = directory / "cursor.json"
        # Segment numbers only grow, so a cursor never points behind a newer segment.
        self._next_number = 0
        self.unreadable = 0
        """Records found unreadable by `open`, skipped."""
        # Unreadable lines among those `open` returned, oldest first: (readable records
        # before them, how many). They are settled once those readable records are.
        self._unreadable_after: deque[tuple[int, int]] = deque()
        self._readable_settled = 0

    @property
    def bytes_used(self) -> int:
        return sum(segment.size for segment in self._segments)

    @property
    def pending(self) -> int:
        """Readable records not settled yet."""
        records = sum(segment.records for segment in self._segments) - self._settled_in_first
        return records - sum(lines for _, lines in self._unreadable_after)

    def open(self) -> list[SpooledEvent]:
        """Load the spool and return what was accepted but not settled, oldest first."""
        self._directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(self._directory.glob(f"{_SEGMENT_PREFIX}*{_SEGMENT_SUFFIX}")):
            number = int(path.name[len(_SEGMENT_PREFIX) : -len(_SEGMENT_SUFFIX)])
            records = _repair_and_count(path)
            self._segments.append(_Segment(number, path, records, path.stat().st_size))
        first_unsettled = self._read_cursor()
        last = self._segments[-1].number + 1 if self._segments else 0
        self._next_number = max(last, first_unsettled[0])
        while self._segments and self._segments[0].number < first_unsettled[0]:
            self._drop_first_segment()
        if self._segments and self._segments[0].number == first_unsettled[0]:
            self._settled_in_first = min(first_unsettled[1], self._segments[0].records)
        unsettled = self._read_unsettled()
        self._advance(self._unreadable_settled_by(0))
        return unsettled

    def _read_cursor(self) -> tuple[int, int]:
        try:
            cursor = orjson.loads(self._cursor_path.read_bytes())
            return int(cursor["segment"]), int(cursor["line"])
        except FileNotFoundError:
            return (self._segments[0].number, 0) if self._segments else (0, 0)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            # Re-sending is safe (deterministic ids); skipping could lose events.
            log.error("spool_cursor_unreadable", path=str(self._cursor_path), error=str(exc))
            return (self._segments[0].number, 0) if self._segments else (0, 0)

    def _read_unsettled(self) -> list[SpooledEvent]:
        records: list[SpooledEvent] = []
        for index, segment in enumerate(self._segments):
            skip = self._settled_in_first if index == 0 else 0
            with segment.path.open("rb") as file:
                for line_number, line in enumerate(file):
                    if line_number < skip:
                        continue
                    try:
                        records.append(_decode(line))
                    except InputError as exc:
                        log.error(
                            "spool_record_unreadable",
                            path=str(segment.path),
                            line=line_number + 1,
                            error=str(exc),
                        )
                        self._skip_unreadable(after=len(records))
        return records

    def _skip_unreadable(self, *, after: int) -> None:
        self.unreadable += 1
        if self._unreadable_after and self._unreadable_after[-1][0] == after:
            self._unreadable_after[-1] = (after, self._unreadable_after[-1][1] + 1)
        else:
            self._unreadable_after.append((after, 1))

    def _unreadable_settled_by(self, count: int) -> int:
        """How many unreadable lines are settled once `count` more readable records are."""
        self._readable_settled += count
        lines = 0
        while self._unreadable_after and self._unreadable_after[0][0] <= self._readable_settled:
            lines += self._unreadable_after.popleft()[1]
        return lines

    def append(self, event: Event, *, source: str) -> int:
        """Write one record and hand it to the kernel; returns its size in bytes."""
        line = orjson.dumps({"source": source, "event": event.to_wire()}, option=orjson.OPT_UTC_Z)
        line += b"\n"
        writer = self._current_writer(len(line))
        writer.write(line)
        writer.flush()
        segment = self._segments[-1]
        segment.records += 1
        segment.size += len(line)
        return len(line)

    def _current_writer(self, incoming: int) -> IO[bytes]:
        last = self._segments[-1] if self._segments else None
        if self._writer is not None and last is not None:
            if last.size + incoming <= self._segment_bytes or last.records == 0:
                return self._writer
            self._writer.close()
        number = self._next_number
        self._next_number += 1
        path = self._directory / f"{_SEGMENT_PREFIX}{number:012d}{_SEGMENT_SUFFIX}"
        self._segments.append(_Segment(number, path, 0, 0))
        self._writer = path.open("ab")
        return self._writer

    def settle(self, count: int) -> bytes:
        """Mark the next `count` records as done and drop finished segments; returns the
        cursor to hand to `save_cursor` (which may run in a thread: it touches no state)."""
        if self._unreadable_after:
            count += self._unreadable_settled_by(count)
        self._advance(count)
        first = self._segments[0].number if self._segments else self._next_number
        return orjson.dumps({"segment": first, "line": self._settled_in_first})

    def _advance(self, lines: int) -> None:
        self._settled_in_first += lines
        while self._segments and self._settled_in_first >= self._segments[0].records:
            if len(self._segments) == 1:
                self.close()  # the next record opens a new segment
            self._settled_in_first -= self._segments[0].records
            self._drop_first_segment()

    def save_cursor(self, cursor: bytes) -> None:
        write_atomically(self._cursor_path, cursor)

    def _drop_first_segment(self) -> None:
        segment = self._segments.popleft()
        segment.path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _decode(line: bytes) -> SpooledEvent:
    try:
        record: dict[str, Any] = orjson.loads(line)
        return SpooledEvent(
            event=parse_wire_event(orjson.dumps(record["event"])), source=str(record["source"])
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"not a spool record: {exc}") from exc


def _repair_and_count(path: Path) -> int:
    """Count whole records; cut a last line left half-written by a killed process."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        log.warning("spool_partial_record_cut", path=str(path), bytes=len(data) - end)
        with path.open("r+b") as file:
            file.truncate(end)
    return data.count(b"\n", 0, end)


class Checkpoint:
    """The last delivered event per resource, kept across restarts.

    It seeds `follows` (a restart does not break chains) and the once-per-process ids (a
    re-listed, unchanged object is not sent again).
    """

    def __init__(self, path: Path) -> None:
        self._path = path

    def load(self) -> dict[str, tuple[str, str]]:
        """resource id → (event id, occurred as ISO 8601); empty when absent or unreadable."""
        try:
            raw = orjson.loads(self._path.read_bytes())
        except FileNotFoundError:
            return {}
        except orjson.JSONDecodeError as exc:
            log.error("checkpoint_unreadable", path=str(self._path), error=str(exc))
            return {}
        if not isinstance(raw, dict):
            log.error("checkpoint_unreadable", path=str(self._path), error="not an object")
            return {}
        return {
            str(resource): (str(entry[0]), str(entry[1]))
            for resource, entry in raw.items()
            if isinstance(entry, list) and len(entry) == 2
        }

    def save(self, latest: dict[str, tuple[str, str]]) -> None:
        write_atomically(self._path, orjson.dumps(latest))
