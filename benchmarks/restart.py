"""A restart with existing pods: what is posted again, and whether the server keeps it all.

    .venv/bin/python -m benchmarks.restart                          # 50 and 1,000 pods
    .venv/bin/python -m benchmarks.restart --sizes 1000 --modes on  # one case

For each size and mode, on a fresh Prefect 3.8.8 server (the test peer, behind the recording
sink) and a real kube-apiserver: N labelled Pending pods exist; a first daemon delivers their
events (the time from its start to the last of them reaching the sink is its start-up)
and is stopped (SIGTERM); once the server has stored them, and 1,000 events of other
resources after them (`--others`), a second daemon starts, and as soon as it has listed the
pods every pod moves to Running. The server's publisher drops ids it saw in the last five
minutes, but remembers 1,000 at most: the other events stand for a server that has been busy
since, or for a restart long after the pods' events were delivered. Counted: the events posted
again after the restart (ids the first daemon had delivered), the `/events/filter` reads,
the events stored against the 2N expected, and the server's "dropping N events" log lines.

Modes: `on` is the default (`INFRA_OBSERVER_EMITTER_SKIP_STORED=true`), `off` sends every
listed event again. Nothing here fails on a number; figures in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._common import table, write_results
from benchmarks._harness import Driver, KubePeer, Observer, Pod, PrefectPeer, Sink
from tests.peers.prefect import make_event

NAMES = ("prefect.kubernetes.pod.pending", "prefect.kubernetes.pod.running")
DROPPING = re.compile(rb"dropping (\d+) events")
POLL_SECONDS = 0.25

log = logging.getLogger("benchmarks.restart")


class Case:
    """One size in one mode, on its own Prefect server (posting stored ids may harm it)."""

    def __init__(self, kube: KubePeer, *, size: int, mode: str, others: int, logs: Path) -> None:
        self.kube = kube
        self.size = size
        self.mode = mode
        self.others = others
        self.logs = logs
        self.prefect = PrefectPeer()
        self.sink: Sink | None = None
        self.http: aiohttp.ClientSession | None = None

    def observer(self) -> Observer:
        assert self.sink is not None
        skip = "true" if self.mode == "on" else "false"
        return Observer(
            "ours",
            kubeconfig=self.kube.kubeconfig,
            api_url=self.sink.api_url,
            log_dir=self.logs,
            extra_env={"INFRA_OBSERVER_EMITTER_SKIP_STORED": skip},
        )

    async def posted(self, pods: list[Pod], name: str, *, since: int = 0) -> list[str]:
        """Ids of `name` events of these pods that reached the sink, from arrival `since`."""
        assert self.sink is not None
        assert self.http is not None
        await self.sink.poll(self.http)
        wanted = {f"prefect.kubernetes.pod.{pod.uid}" for pod in pods}
        return [
            event_id
            for event_id, event, resource, _ in self.sink.arrivals[since:]
            if event == name and resource in wanted
        ]

    async def wait_posted(self, pods: list[Pod], name: str, *, since: int, limit: float) -> float:
        deadline = time.monotonic() + limit
        while len(set(await self.posted(pods, name, since=since))) < len(pods):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(POLL_SECONDS)
        return time.time()

    async def wait_stored(self, count: int, *, limit: float) -> list[dict[str, Any]]:
        """Poll the server until `count` events are stored or `limit` passes."""
        deadline = time.monotonic() + limit
        while True:
            stored = await self.prefect.read_events(names=list(NAMES))
            if len(stored) >= count or time.monotonic() > deadline:
                return stored
            await asyncio.sleep(1)

    async def post_others(self) -> None:
        """Events of other resources, posted straight to the server and stored."""
        events = [make_event("bench.other", f"bench.other.{i}") for i in range(self.others)]
        for start in range(0, len(events), 200):
            (await self.prefect.post_events(events[start : start + 200])).raise_for_status()
        deadline = time.monotonic() + 60
        while len(await self.prefect.read_events(names=["bench.other"])) < self.others:
            if time.monotonic() > deadline:
                raise RuntimeError("the other events were not stored within 60 s")
            await asyncio.sleep(1)

    def requests(self) -> int:
        assert self.sink is not None
        return self.sink.requests.get("POST /api/events/filter", 0)

    def dropped(self) -> tuple[int, int]:
        """The server log's "dropping N events" lines, and the sum of their N."""
        text = (self.prefect.state_dir / "prefect.log").read_bytes()
        counts = [int(n) for n in DROPPING.findall(text)]
        return len(counts), sum(counts)


async def run_case(case: Case) -> dict[str, Any]:
    await asyncio.to_thread(case.prefect.start)
    case.sink = Sink(upstream=case.prefect.api_url.removesuffix("/api"))
    case.http = aiohttp.ClientSession()
    driver = Driver(case.kube)
    try:
        return await restart(case, driver)
    finally:
        await driver.close()
        await case.http.close()
        case.sink.stop()
        await asyncio.to_thread(case.prefect.stop)


async def restart(case: Case, driver: Driver) -> dict[str, Any]:
    size = case.size
    pods = await driver.create(f"restart-{case.mode}-{size}", size, labelled=True)
    first = case.observer()
    first.start()
    try:
        delivered = await case.wait_posted(pods, NAMES[0], since=0, limit=60 + size * 0.05)
        await first.settle(limit=60)
    finally:
        first.stop()
    before = set(await case.posted(pods, NAMES[0]))
    await case.wait_stored(len(before), limit=60)
    await case.post_others()
    mark = len(case.sink.arrivals) if case.sink else 0
    reads = case.requests()
    second = case.observer()
    second.start()
    try:
        listed = await _until_listed(second, limit=60)
        moved_at = time.time()
        await driver.set_phase(pods, "Running")
        last = await case.wait_posted(pods, NAMES[1], since=mark, limit=60 + size * 0.05)
        await second.settle(limit=60)
        posted_again = [i for i in await case.posted(pods, NAMES[0], since=mark) if i in before]
        reads = case.requests() - reads
    finally:
        second.stop()
    await asyncio.sleep(10)  # the persister's retries of a failing batch play out
    stored = await case.wait_stored(2 * size, limit=30)
    lines, dropped = case.dropped()
    await driver.delete(pods)
    return {
        "pods": size,
        "mode": case.mode,
        "first_delivered": len(before),
        "first_start_seconds": delivered - first.started_at,
        "posted_again": len(posted_again),
        "filter_reads": reads,
        "listed_seconds": listed - second.started_at,
        "moved_to_all_posted_seconds": last - moved_at,
        "stored": len(stored),
        "stored_distinct": len({event["id"] for event in stored}),
        "missing": 2 * size - len({event["id"] for event in stored}),
        "dropping_lines": lines,
        "dropped_events": dropped,
    }


async def _until_listed(observer: Observer, *, limit: float) -> float:
    """When the daemon logged that its pods are listed (its first sync is done)."""
    deadline = time.monotonic() + limit
    while b'"kubernetes_ready"' not in observer.log_path.read_bytes():
        if time.monotonic() > deadline or not observer.alive():
            raise RuntimeError(f"the daemon did not list the pods; see {observer.log_path}")
        await asyncio.sleep(0.05)
    return time.time()


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    logs = Path(tempfile.mkdtemp(prefix="io-restart-"))
    kube = await asyncio.to_thread(KubePeer().start)
    results = []
    try:
        for size in args.sizes:
            for mode in args.modes:
                case = Case(kube, size=size, mode=mode, others=args.others, logs=logs)
                result = await run_case(case)
                log.info("restart %d %s: %s", size, mode, result)
                results.append(result)
    finally:
        await asyncio.to_thread(kube.stop)
    return results


COLUMNS = (
    "pods",
    "mode",
    "first_start_seconds",
    "posted_again",
    "filter_reads",
    "stored_distinct",
    "missing",
    "dropping_lines",
    "dropped_events",
    "listed_seconds",
    "moved_to_all_posted_seconds",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,1000", help="comma-separated pod counts")
    parser.add_argument("--modes", default="off,on", help="off (send again), on (skip stored)")
    parser.add_argument(
        "--others", type=int, default=1000, help="events of other resources before the restart"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    args.sizes = [int(n) for n in args.sizes.split(",")]
    args.modes = [mode.strip() for mode in args.modes.split(",")]
    started = time.monotonic()
    results = asyncio.run(run(args))
    rows = [[result[column] for column in COLUMNS] for result in results]
    print(table("Restart with existing pods (Prefect server)", list(COLUMNS), rows))
    settings = {"sizes": args.sizes, "modes": args.modes, "others": args.others}
    path = write_results(
        "restart",
        {"settings": settings, "seconds": time.monotonic() - started, "cases": results},
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
