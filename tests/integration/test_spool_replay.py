"""The spool after a crash: a real process killed mid-write, then replayed to a real Prefect
server through the fault proxy (which records every POST and its size)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from infra_observer.config import EmitterSettings, PrefectSettings
from infra_observer.emitter import Emitter, events_api_sink
from infra_observer.emitter.spool import Checkpoint, Spool
from infra_observer.events.model import Event
from infra_observer.metrics import Metrics
from tests.integration.test_emitter_delivery import FAST, Running, sample
from tests.peers import PrefectPeer
from tests.peers._util import free_port
from tests.peers.faulty_proxy import FaultyProxy
from tests.unit.test_spool import damage

# Submits events to a spooled emitter whose events API is down, one every 2 ms, until killed.
WRITER = textwrap.dedent(
    """
    import asyncio, sys, uuid
    from datetime import UTC, datetime
    from pathlib import Path
    from prometheus_client import CollectorRegistry
    from infra_observer.config import EmitterSettings, PrefectSettings
    from infra_observer.emitter import Emitter, events_api_sink
    from infra_observer.emitter.spool import Checkpoint, Spool
    from infra_observer.events.model import Event
    from infra_observer.metrics import Metrics

    async def main(directory: Path, api_url: str, run: str) -> None:
        settings = EmitterSettings()
        emitter = Emitter(
            sink=events_api_sink(PrefectSettings(api_url=api_url), settings),
            settings=settings,
            metrics=Metrics(CollectorRegistry()),
            spool=Spool(directory),
            checkpoint=Checkpoint(directory / "checkpoint.json"),
        )
        await emitter.open()
        delivery = asyncio.create_task(emitter.run())
        index = 0
        while not delivery.done():
            resource = {"prefect.resource.id": f"prefect.docker.container.{run}-{index}"}
            event = Event(
                occurred=datetime.now(UTC),
                event="prefect.docker.container.running",
                resource=resource,
                id=uuid.uuid4(),
            )
            await emitter.submit(event, source="docker")
            index += 1
            await asyncio.sleep(0.002)
        delivery.result()

    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3]))
    """
)


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("segment-*.jsonl"))


def spooled_ids(directory: Path) -> list[str]:
    """Ids of the whole, readable records, in spool order."""
    ids: list[str] = []
    for segment in segments(directory):
        for line in segment.read_bytes().splitlines(keepends=True):
            if not line.endswith(b"\n"):
                continue  # the last record, torn by the kill: the spool cuts it
            try:
                ids.append(str(orjson.loads(line)["event"]["id"]))
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue  # damaged
    return ids


def kill_writer_mid_stream(directory: Path, *, records: int) -> None:
    """Run the writer until at least `records` are spooled, then SIGKILL it."""
    down = f"http://127.0.0.1:{free_port()}/api"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(directory), down, uuid.uuid4().hex[:8]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while sum(path.read_bytes().count(b"\n") for path in segments(directory)) < records:
            assert writer.poll() is None, writer.communicate()[1].decode()
            assert time.monotonic() < deadline, "the writer spooled too little"
            time.sleep(0.02)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.communicate(timeout=30)
    assert writer.returncode == -signal.SIGKILL


@pytest.fixture
async def proxy(prefect: PrefectPeer) -> AsyncIterator[FaultyProxy]:
    proxy = await FaultyProxy(prefect.api_url).start()
    yield proxy
    await proxy.stop()


# A slow answer from a busy server must not become a second POST of the same batch.
PATIENT = FAST.model_copy(update={"request_timeout_seconds": 20.0})


async def replay(
    api_url: str, directory: Path, *, settings: EmitterSettings = PATIENT
) -> tuple[Running, list[dict[str, Any]]]:
    """Start a spooled emitter on `directory`, let it deliver what it replays, stop it."""
    metrics = Metrics(CollectorRegistry())
    sink = events_api_sink(PrefectSettings(api_url=api_url), settings)
    emitter = Emitter(
        sink=sink,
        settings=settings,
        metrics=metrics,
        spool=Spool(directory),
        checkpoint=Checkpoint(directory / "checkpoint.json"),
    )
    with capture_logs() as logs:
        await emitter.open()
        running = Running(emitter, sink, metrics, asyncio.create_task(emitter.run()))
        await running.finish(deadline=60)
    assert not logged(logs, "emitter_stopped_with_undelivered_events")
    return running, logs


def logged(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


async def test_a_damaged_record_after_a_kill_is_skipped_once_and_the_cursor_moves_past_it(
    tmp_path: Path, prefect: PrefectPeer, proxy: FaultyProxy
) -> None:
    kill_writer_mid_stream(tmp_path, records=120)
    (first, *_) = segments(tmp_path)
    damage(first, {40: b'{"source": "docker", "event": {"occurred": "\x00\x00\x00'})
    expected = spooled_ids(tmp_path)
    assert len(expected) >= 119

    running, logs = await replay(proxy.api_url, tmp_path)
    stored = await prefect.wait_for_events(expected_count=len(expected), ids=expected)
    assert sorted(event["id"] for event in stored) == sorted(expected)
    assert sum(seen.events for seen in proxy.posts()) == len(expected)  # each sent once
    assert not segments(tmp_path)  # everything settled, the damaged line included
    (unreadable,) = logged(logs, "spool_record_unreadable")
    assert unreadable["line"] == 41
    assert logged(logs, "spool_opened")[0]["unreadable"] == 1
    assert sample(running.metrics, "infra_observer_spool_records_unreadable_total") == 1

    # A restart finds nothing left: nothing is sent again, nothing is logged again.
    before = len(proxy.posts())
    _, logs = await replay(proxy.api_url, tmp_path)
    assert logged(logs, "spool_opened")[0]["pending"] == 0
    assert not logged(logs, "spool_record_unreadable")
    assert not [seen for seen in proxy.posts()[before:] if seen.events]


def large_event(index: int, *, payload_bytes: int) -> Event:
    return Event(
        occurred=datetime.now(UTC),
        event="prefect.docker.container.running",
        resource={"prefect.resource.id": f"prefect.docker.container.large-{uuid.uuid4()}"},
        id=uuid.uuid4(),
        payload={"index": index, "padding": "x" * payload_bytes},
    )


async def test_replay_cuts_batches_within_batch_max_bytes(
    tmp_path: Path, prefect: PrefectPeer, proxy: FaultyProxy
) -> None:
    limit = 1_500_000
    settings = PATIENT.model_copy(update={"batch_max_bytes": limit})
    # Three of these fill a batch, well under its count bound; ten need four batches.
    events = [large_event(index, payload_bytes=450_000) for index in range(10)]
    spool = Spool(tmp_path)
    spool.open()
    for event in events:
        spool.append(event, source="docker")
    spool.close()

    await replay(proxy.api_url, tmp_path, settings=settings)
    posts = [seen for seen in proxy.posts() if seen.events]
    assert all(seen.size <= limit for seen in posts), [seen.size for seen in posts]
    # 3, 3, 3 and 1 (a batch retried after a slow answer would only repeat a size).
    assert {seen.events for seen in posts} == {3, 1}
    ids = [str(event.id) for event in events]
    stored = await prefect.wait_for_events(expected_count=len(ids), ids=ids, timeout=60)
    assert sorted(event["id"] for event in stored) == sorted(ids)
    assert not segments(tmp_path)
