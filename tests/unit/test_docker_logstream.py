"""Docker's log stream (multiplexed frames, or raw with a TTY) read into its last lines."""

from __future__ import annotations

from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra_observer.errors import InputError
from infra_observer.sources.docker.logstream import (
    LINE_MAX_BYTES,
    TAIL_MAX_BYTES,
    TRUNCATED,
    LogTail,
    last_lines,
)

STDOUT, STDERR = 1, 2


def frame(stream: int, payload: bytes) -> bytes:
    """One frame as Docker writes it: stream, three zero bytes, size (big-endian), payload."""
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


class Row(NamedTuple):
    name: str
    data: bytes
    framed: bool
    lines: int
    expected: list[str]


ROWS = (
    Row("empty", b"", True, 10, []),
    Row("one frame", frame(STDOUT, b"one\ntwo\n"), True, 10, ["one", "two"]),
    Row(
        "stdout and stderr interleaved",
        frame(STDOUT, b"one\n") + frame(STDERR, b"two\n") + frame(STDOUT, b"three\n"),
        True,
        10,
        ["one", "two", "three"],
    ),
    Row("the last lines only", frame(STDOUT, b"1\n2\n3\n4\n"), True, 2, ["3", "4"]),
    Row(
        "a line in pieces across frames",
        frame(STDOUT, b"hel") + frame(STDOUT, b"lo\n"),
        True,
        10,
        ["hello"],
    ),
    Row(
        "pieces of two streams do not mix",
        frame(STDOUT, b"out-") + frame(STDERR, b"err\n") + frame(STDOUT, b"line\n"),
        True,
        10,
        ["err", "out-line"],
    ),
    Row("a last line without its newline", frame(STDERR, b"a\nb"), True, 10, ["a", "b"]),
    Row("an empty line is a line", frame(STDOUT, b"a\n\nb\n"), True, 10, ["a", "", "b"]),
    Row("an empty frame", frame(STDOUT, b"") + frame(STDOUT, b"x\n"), True, 10, ["x"]),
    Row("stdin frames count too", frame(0, b"typed\n"), True, 10, ["typed"]),
    Row("TTY: raw, carriage returns dropped", b"one\r\ntwo\r\n", False, 10, ["one", "two"]),
    Row("TTY: the last lines only", b"1\n2\n3", False, 2, ["2", "3"]),
    Row("invalid UTF-8 is replaced", frame(STDOUT, b"caf\xe9\n"), True, 10, ["caf\ufffd"]),
    Row("no lines asked", frame(STDOUT, b"a\n"), True, 0, []),
    Row("a header cut short at the end", frame(STDOUT, b"a\n") + b"\x01\x00", True, 10, ["a"]),
)


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_streams_read_into_their_last_lines(row: Row) -> None:
    assert last_lines(row.data, lines=row.lines, framed=row.framed) == row.expected


@pytest.mark.parametrize(
    ("header", "shown"),
    [
        (b"\x03\x00\x00\x00\x00\x00\x00\x01", "0300000000000001"),
        (b"\x01\x00\x07\x00\x00\x00\x00\x01", "0100070000000001"),
        (b"hello, w", "68656c6c6f2c2077"),
    ],
)
def test_a_frame_header_that_is_not_dockers_is_an_input_error(header: bytes, shown: str) -> None:
    with pytest.raises(InputError, match=f"frame header {shown} is not Docker's"):
        last_lines(header + b"orld\n", lines=10, framed=True)


def test_a_line_longer_than_the_bound_is_cut() -> None:
    data = frame(STDOUT, b"x" * (LINE_MAX_BYTES + 10) + b"\nnext\n")
    first, second = last_lines(data, lines=10, framed=True)
    assert first == "x" * LINE_MAX_BYTES + TRUNCATED
    assert second == "next"


def test_only_the_last_lines_that_fit_the_bound_are_kept() -> None:
    line = "y" * (TAIL_MAX_BYTES // 5)
    data = frame(STDOUT, f"{line}\n".encode() * 8)
    assert last_lines(data, lines=8, framed=True) == [line] * 5


CHUNKS = st.lists(st.tuples(st.sampled_from([STDOUT, STDERR]), st.binary(max_size=40)), max_size=8)


@given(frames=CHUNKS, cuts=st.lists(st.integers(0, 400), max_size=6), lines=st.integers(0, 6))
def test_chunk_boundaries_change_nothing(
    frames: list[tuple[int, bytes]], cuts: list[int], lines: int
) -> None:
    data = b"".join(frame(stream, payload) for stream, payload in frames)
    tail = LogTail(lines=lines, framed=True)
    start = 0
    for cut in sorted(c for c in cuts if c <= len(data)):
        tail.feed(data[start:cut])
        start = cut
    tail.feed(data[start:])
    assert tail.finish() == last_lines(data, lines=lines, framed=True)
