"""Lines written to a flow run's logs (`POST /logs/`), one record per line, in requests
within the server's size limits."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit
from uuid import UUID

import orjson

from infra_observer.prefect_api.client import PrefectApi
from infra_observer.prefect_api.statuses import raise_for_status

# Prefect's own limits (its client settings, prefect.settings.models.logging and .cloud):
MAX_LOG_BYTES = 1_000_000
"""Largest record, as JSON: the default of `PREFECT_LOGGING_TO_API_MAX_LOG_SIZE`."""
CLOUD_MAX_LOG_BYTES = 25_000
"""Largest record for Prefect Cloud: the default of `PREFECT_CLOUD_MAX_LOG_SIZE`."""
BATCH_BYTES = 4_000_000
"""Largest request body: the default of `PREFECT_LOGGING_TO_API_BATCH_SIZE`."""
CUT_MARKER = "... [truncated]"
"""Ends a line cut to fit a record: the marker Prefect's own client uses."""
_CLOUD_HOST_SUFFIX = ".prefect.cloud"


def max_log_bytes(api_url: str) -> int:
    """The record size limit of the API at `api_url`: Cloud's is smaller."""
    host = urlsplit(api_url).hostname or ""
    return CLOUD_MAX_LOG_BYTES if host.endswith(_CLOUD_HOST_SUFFIX) else MAX_LOG_BYTES


class Logs:
    """Writes to flow runs' logs. A failed request raises a `DeliveryError` subclass
    (`statuses.py`); requests sent before it stay written."""

    def __init__(self, api: PrefectApi, *, max_record_bytes: int | None = None) -> None:
        self._api = api
        self._max_record_bytes = max_record_bytes or max_log_bytes(api.url(""))

    async def write_logs(
        self,
        flow_run_id: UUID,
        lines: Sequence[str],
        *,
        level: int,
        name: str,
        timestamp: datetime | None = None,
    ) -> int:
        """Write each line as one record at `level` (30 WARNING, 40 ERROR) from logger `name`;
        returns the number of requests made. Line `i` is timestamped `timestamp` (default:
        now) plus `i` microseconds, so the server's order by time is the lines' order."""
        records = log_records(
            flow_run_id,
            lines,
            level=level,
            name=name,
            timestamp=timestamp or datetime.now(UTC),
            max_record_bytes=self._max_record_bytes,
        )
        url = self._api.url("/logs/")
        requests = 0
        for body in request_bodies(records, max_bytes=BATCH_BYTES):
            raise_for_status(await self._api.request("POST", "/logs/", body=body), url=url)
            requests += 1
        return requests


def log_records(
    flow_run_id: UUID,
    lines: Iterable[str],
    *,
    level: int,
    name: str,
    timestamp: datetime,
    max_record_bytes: int,
) -> Iterator[bytes]:
    """Each line as a JSON log record of at most `max_record_bytes`; a longer line is cut
    and ends in `CUT_MARKER`."""
    run = str(flow_run_id)
    for index, line in enumerate(lines):
        moment = (timestamp + timedelta(microseconds=index)).isoformat()
        # The record without its message, and the room that leaves for it (quotes included).
        empty = _record(run, level=level, name=name, timestamp=moment, message="")
        room = max_record_bytes - len(empty) + len(b'""')
        message = fit(_text(line), room=room)
        yield _record(run, level=level, name=name, timestamp=moment, message=message)


def _record(run: str, *, level: int, name: str, timestamp: str, message: str) -> bytes:
    return orjson.dumps(
        {
            "name": name,
            "level": level,
            "message": message,
            "timestamp": timestamp,
            "flow_run_id": run,
        }
    )


def fit(line: str, *, room: int) -> str:
    """`line`, or its longest start followed by `CUT_MARKER`, whose JSON string takes at most
    `room` bytes (escapes and multi-byte characters counted as written)."""
    if _json_size(line) <= room:
        return line
    # The size only grows with the length of the start kept: search that length. A start
    # longer than `room` characters cannot fit (each takes a byte at least).
    shortest, longest = 0, min(len(line), room)
    while shortest < longest:
        middle = (shortest + longest + 1) // 2
        if _json_size(line[:middle] + CUT_MARKER) <= room:
            shortest = middle
        else:
            longest = middle - 1
    return line[:shortest] + CUT_MARKER


def _json_size(text: str) -> int:
    return len(orjson.dumps(text))


def _text(line: str) -> str:
    """`line`, with what cannot be written as UTF-8 (a lone surrogate, as from bytes decoded
    with `surrogateescape`) replaced."""
    try:
        orjson.dumps(line)
    except orjson.JSONEncodeError:
        return line.encode("utf-8", "replace").decode()
    return line


def request_bodies(records: Iterable[bytes], *, max_bytes: int) -> Iterator[bytes]:
    """JSON arrays of the records, in order, each at most `max_bytes` (a record larger than
    that alone goes in a request of its own)."""
    batch: list[bytes] = []
    size = 2  # the brackets
    for record in records:
        added = len(record) + (1 if batch else 0)  # a comma between records
        if batch and size + added > max_bytes:
            yield b"[" + b",".join(batch) + b"]"
            batch, size, added = [], 2, len(record)
        batch.append(record)
        size += added
    if batch:
        yield b"[" + b",".join(batch) + b"]"
