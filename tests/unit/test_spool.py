from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from infra_observer.emitter.spool import SEGMENT_BYTES, Checkpoint, Spool
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
