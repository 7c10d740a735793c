from __future__ import annotations

import os
import stat
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from structlog.testing import capture_logs

from infra_observer.emitter.spool import SEGMENT_BYTES, Checkpoint, Spool, write_atomically
from infra_observer.events.model import Event

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def event(index: int) -> Event:
    return Event(
        occurred=T0 + timedelta(seconds=index),
        event="prefect.docker.container.running",
        resource={"prefect.resource.id": f"prefect.docker.container.c{index % 3}"},
        id=uuid.UUID(int=index + 1),
        follows=uuid.UUID(int=index) if index else None,
    )


def spool_with(
    tmp_path: Path, count: int, *, source: str, segment_bytes: int = SEGMENT_BYTES
) -> Spool:
    """An opened spool holding events 0 to count - 1, appended in order."""
    spool = Spool(tmp_path, segment_bytes=segment_bytes)
    spool.open()
    for index in range(count):
        spool.append(event(index), source=source)
    return spool


def test_unsettled_records_come_back_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    assert spool.open() == []
    for index in range(5):
        spool.append(event(index), source="docker")
    spool.save_cursor(spool.settle(2))
    spool.close()
    reopened = Spool(tmp_path).open()
    assert [record.event for record in reopened] == [event(2), event(3), event(4)]
    assert {record.source for record in reopened} == {"docker"}


def test_settled_segments_are_deleted_and_the_bound_is_measurable(tmp_path: Path) -> None:
    spool = spool_with(tmp_path, 12, source="docker", segment_bytes=600)
    segments = sorted(tmp_path.glob("segment-*.jsonl"))
    assert len(segments) > 2
    used = spool.bytes_used
    spool.save_cursor(spool.settle(10))
    assert spool.bytes_used < used
    assert len(sorted(tmp_path.glob("segment-*.jsonl"))) < len(segments)
    assert spool.pending == 2
    spool.close()
    assert [record.event for record in Spool(tmp_path, segment_bytes=600).open()] == [
        event(10),
        event(11),
    ]


def test_a_half_written_last_record_is_cut(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    spool.append(event(0), source="kubernetes")
    spool.close()
    (segment,) = tmp_path.glob("segment-*.jsonl")
    with segment.open("ab") as file:
        file.write(b'{"source": "kubernetes", "event": {"occ')
    assert [record.event for record in Spool(tmp_path).open()] == [event(0)]
    assert segment.read_bytes().endswith(b"\n")


def test_an_unreadable_cursor_replays_everything(tmp_path: Path) -> None:
    spool = spool_with(tmp_path, 3, source="ecs")
    spool.save_cursor(spool.settle(2))
    spool.close()
    (tmp_path / "cursor.json").write_text("{not json")
    # Sending two delivered events again is safe (same ids); skipping one would not be.
    assert len(Spool(tmp_path).open()) == 3


def test_a_fully_settled_spool_frees_its_space_and_keeps_numbering(tmp_path: Path) -> None:
    spool = spool_with(tmp_path, 3, source="docker")
    spool.save_cursor(spool.settle(3))
    assert spool.bytes_used == 0
    assert not list(tmp_path.glob("segment-*.jsonl"))
    spool.append(event(3), source="docker")
    spool.close()
    (segment,) = tmp_path.glob("segment-*.jsonl")
    assert segment.name == "segment-000000000001.jsonl"
    assert [record.event for record in Spool(tmp_path).open()] == [event(3)]


def test_appends_after_reopening_continue_the_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    spool.append(event(0), source="docker")
    spool.close()
    spool = Spool(tmp_path)
    assert len(spool.open()) == 1
    spool.append(event(1), source="docker")
    spool.save_cursor(spool.settle(1))
    spool.close()
    assert [record.event for record in Spool(tmp_path).open()] == [event(1)]


def test_checkpoint_round_trip_and_damage(tmp_path: Path) -> None:
    checkpoint = Checkpoint(tmp_path / "checkpoint.json")
    assert checkpoint.load() == {}
    latest = {"prefect.kubernetes.pod.u": (str(uuid.UUID(int=7)), T0.isoformat())}
    checkpoint.save(latest)
    assert checkpoint.load() == latest
    (tmp_path / "checkpoint.json").write_text("[1, 2")
    assert checkpoint.load() == {}


def damage(segment: Path, lines: dict[int, bytes]) -> None:
    """Replace whole lines of a segment, as a bad disk block or a stray write would."""
    records = segment.read_bytes().splitlines(keepends=True)
    for number, replacement in lines.items():
        records[number] = replacement + b"\n"
    segment.write_bytes(b"".join(records))


def test_unreadable_records_are_skipped_counted_and_settled_in_place(tmp_path: Path) -> None:
    spool = spool_with(tmp_path, 6, source="docker")
    spool.close()
    (segment,) = tmp_path.glob("segment-*.jsonl")
    not_an_event = orjson.dumps({"source": "docker", "event": {"id": "x"}})
    damage(segment, {0: b"\x00\x00\x00", 3: not_an_event, 5: b"{torn"})

    spool = Spool(tmp_path)
    with capture_logs() as logs:
        records = spool.open()
    assert [record.event for record in records] == [event(1), event(2), event(4)]
    unreadable = [entry for entry in logs if entry["event"] == "spool_record_unreadable"]
    assert [entry["line"] for entry in unreadable] == [1, 4, 6]
    assert all(entry["log_level"] == "error" and entry["error"] for entry in unreadable)
    # Each damaged line is settled with the records around it: the cursor never lags.
    assert orjson.loads(spool.settle(2)) == {"segment": 0, "line": 4}
    assert spool.pending == 1
    spool.save_cursor(spool.settle(1))
    assert spool.pending == 0
    assert not list(tmp_path.glob("segment-*.jsonl"))
    assert spool.unreadable == 3
    spool.close()

    again = Spool(tmp_path)
    with capture_logs() as logs:
        assert again.open() == []
    assert again.unreadable == 0
    assert not logs  # nothing replayed, nothing logged twice


def test_a_spool_of_only_unreadable_records_is_settled_at_open(tmp_path: Path) -> None:
    spool = spool_with(tmp_path, 2, source="ecs")
    spool.close()
    (segment,) = tmp_path.glob("segment-*.jsonl")
    damage(segment, {0: b"[]", 1: b"null"})
    spool = Spool(tmp_path)
    assert spool.open() == []
    spool.append(event(2), source="ecs")
    spool.save_cursor(spool.settle(1))
    assert not list(tmp_path.glob("segment-*.jsonl"))
    spool.close()
    assert Spool(tmp_path).open() == []
    assert spool.unreadable == 2


def test_a_rename_is_made_durable_by_syncing_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A renamed file is durable only once its directory is synced: a machine crash could
    otherwise bring back the old cursor, or none. Only a power cut shows it otherwise, so
    the calls are recorded."""
    target = tmp_path / "cursor.json"
    synced: list[tuple[int, bool]] = []
    real_fsync = os.fsync

    def recording_fsync(descriptor: int) -> None:
        status = os.fstat(descriptor)
        if stat.S_ISDIR(status.st_mode):
            synced.append((status.st_ino, target.exists()))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    write_atomically(target, b"{}")
    assert synced == [(tmp_path.stat().st_ino, True)]  # after the rename, not before
