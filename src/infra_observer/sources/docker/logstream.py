"""A container's log stream, as `GET /containers/{id}/logs` sends it, read into its last lines.

Pure: bytes in as they arrive, lines out. Without a TTY Docker multiplexes stdout and
stderr into frames, each an 8-byte header (the stream: 0 stdin, 1 stdout, 2 stderr; three
zero bytes; the payload's size, big-endian) and the payload; a container with a TTY writes
one raw stream. Lines are split per stream, so a line written in pieces across frames comes
out whole, and a TTY's carriage returns are dropped.

Memory stays bounded whatever the container wrote: frames are consumed as they arrive,
never buffered whole, a line longer than `LINE_MAX_BYTES` is cut, and of the last lines only
those whose text fits in `TAIL_MAX_BYTES` characters are kept.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from infra_observer.errors import InputError

HEADER_BYTES: Final = 8
LINE_MAX_BYTES: Final = 1_000_000
"""Prefect's limit of one log record: a longer line could not be written whole anyway."""
TAIL_MAX_BYTES: Final = 4_000_000
"""The most text of lines kept: as much as one request to Prefect's logs API carries."""
TRUNCATED: Final = " [truncated]"
_STREAMS: Final = (0, 1, 2)
_PADDING: Final = b"\0\0\0"


class LogTail:
    """The last `lines` lines of one log stream, fed in chunks of any size."""

    def __init__(self, *, lines: int, framed: bool) -> None:
        self._framed = framed
        self._tail: deque[str] = deque(maxlen=max(lines, 0))
        self._kept_bytes = 0
        self._header = bytearray()
        self._stream = 1
        self._frame_left = 0
        # Per stream: the line being written, and whether it was already cut.
        self._partial: dict[int, bytearray] = {}
        self._cut: set[int] = set()

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of the stream; raises `InputError` for a frame header that
        is not Docker's."""
        if not self._framed:
            self._write(1, chunk)
            return
        view = memoryview(chunk)
        while view:
            if self._frame_left == 0:
                view = self._read_header(view)
                continue
            payload, view = view[: self._frame_left], view[self._frame_left :]
            self._frame_left -= len(payload)
            self._write(self._stream, payload)

    def finish(self) -> list[str]:
        """The last lines, oldest first, counting a last line without its newline."""
        for stream in sorted(self._partial):
            if self._partial[stream]:
                self._end_line(stream)
        return list(self._tail)

    def _read_header(self, view: memoryview) -> memoryview:
        wanted = HEADER_BYTES - len(self._header)
        self._header += view[:wanted]
        if len(self._header) < HEADER_BYTES:
            return view[wanted:]
        header, self._header = bytes(self._header), bytearray()
        if header[0] not in _STREAMS or header[1:4] != _PADDING:
            raise InputError(f"log stream frame header {header.hex()} is not Docker's")
        self._stream = header[0]
        self._frame_left = int.from_bytes(header[4:], "big")
        return view[wanted:]

    def _write(self, stream: int, data: bytes | memoryview) -> None:
        partial = self._partial.setdefault(stream, bytearray())
        pieces = bytes(data).split(b"\n")
        for piece in pieces[:-1]:
            self._append(stream, partial, piece)
            self._end_line(stream)
        self._append(stream, partial, pieces[-1])

    def _append(self, stream: int, partial: bytearray, piece: bytes) -> None:
        room = LINE_MAX_BYTES - len(partial)
        if len(piece) > room:
            piece = piece[:room]
            self._cut.add(stream)
        partial += piece

    def _end_line(self, stream: int) -> None:
        partial = self._partial[stream]
        line = partial.decode("utf-8", "replace").rstrip("\r")
        partial.clear()
        if stream in self._cut:
            self._cut.discard(stream)
            line += TRUNCATED
        self._keep(line)

    def _keep(self, line: str) -> None:
        if self._tail.maxlen == 0:
            return
        if len(self._tail) == self._tail.maxlen:
            self._kept_bytes -= len(self._tail[0])
        self._tail.append(line)
        self._kept_bytes += len(line)
        while self._kept_bytes > TAIL_MAX_BYTES and len(self._tail) > 1:
            self._kept_bytes -= len(self._tail.popleft())


def last_lines(data: bytes, *, lines: int, framed: bool) -> list[str]:
    """The last `lines` lines of a whole log stream (see `LogTail`)."""
    tail = LogTail(lines=lines, framed=framed)
    tail.feed(data)
    return tail.finish()
