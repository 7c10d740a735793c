"""CPU per request of the daemon's Prefect API client, against a real Prefect server.

    .venv/bin/python -m benchmarks.prefect_api [--calls 300] [--rounds 3]

On the test peer's Prefect 3.8.8 server, on the daemon's event loop: the loop thread's
CPU (`time.thread_time`: the server and every other thread are left out) per call of what
the lifecycle and the events sink do: `Orchestration.set_state` (a Scheduled run proposed
`InfrastructurePending`, each run once), `Orchestration.read_flow_runs` of 200 ids, and an
events post of one event. Beside them, the same `set_state` written by hand on asyncio
streams (one connection, HTTP/1.1 with a content length): the floor that no HTTP library
here goes under. Rounds alternate the kinds, so that a machine that gets busier slows each
alike.

To compare two versions of the client, run this file from one checkout with
`PYTHONPATH=<other checkout>/src`: the client measured is the one importable.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import orjson

from benchmarks._common import table, write_results
from benchmarks._harness import PrefectPeer
from infra_observer.cli import daemon_loop_factory
from infra_observer.config import EmitterSettings, PrefectSettings
from infra_observer.emitter import events_api_sink
from infra_observer.events.model import Event, parse_wire_event
from infra_observer.prefect_api.client import PrefectApi
from infra_observer.prefect_api.orchestration import Orchestration
from tests.peers.prefect import make_event

PROPOSAL = {"type": "PENDING", "name": "InfrastructurePending", "message": "pod is pending."}


async def hand_written(port: int, runs: list[str]) -> None:
    """`set_state` for each run over one connection, the HTTP written and read by hand."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for run in runs:
        body = orjson.dumps({"state": PROPOSAL, "force": False})
        head = (
            f"POST /api/flow_runs/{run}/set_state HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        answer = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in answer.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        orjson.loads(await reader.readexactly(length))
    writer.close()


async def measure(calls: int, *, rounds: int) -> dict[str, list[float]]:
    """Milliseconds of CPU per call, per kind and round."""
    prefect = PrefectPeer().start()
    try:
        return await _measure(prefect, calls=calls, rounds=rounds)
    finally:
        prefect.stop()


async def _measure(prefect: PrefectPeer, *, calls: int, rounds: int) -> dict[str, list[float]]:
    runs = iter(await prefect.create_flow_runs(2 * calls * rounds + 200, flow_name="benchmark"))
    settings = PrefectSettings(api_url=prefect.api_url)
    api = PrefectApi.from_settings(settings, timeout_seconds=30)
    orchestration = Orchestration(api)
    sink = events_api_sink(settings, EmitterSettings())
    readable = [uuid.UUID(next(runs)) for _ in range(200)]

    async def set_state() -> None:
        for _ in range(calls):
            await orchestration.set_state(uuid.UUID(next(runs)), **PROPOSAL)

    async def by_hand() -> None:
        await hand_written(prefect.port, [next(runs) for _ in range(calls)])

    async def bulk_read() -> None:
        for _ in range(calls // 10):
            await orchestration.read_flow_runs(readable)

    async def post_event() -> None:
        for _ in range(calls):
            await sink.send([_event()])

    kinds: dict[str, tuple[Callable[[], Awaitable[None]], int]] = {
        "set_state": (set_state, calls),
        "set_state, by hand": (by_hand, calls),
        "read_flow_runs, 200 ids": (bulk_read, calls // 10),
        "events post, 1 event": (post_event, calls),
    }
    await orchestration.probe()  # the connection is open before anything is measured
    per_call: dict[str, list[float]] = {kind: [] for kind in kinds}
    try:
        for _ in range(rounds):
            for kind, (work, count) in kinds.items():
                started = time.thread_time()
                await work()
                per_call[kind].append(1000 * (time.thread_time() - started) / count)
    finally:
        await api.aclose()
        await sink.aclose()
    return per_call


def _event() -> Event:
    resource = f"benchmark.{uuid.uuid4()}"
    return parse_wire_event(orjson.dumps(make_event("benchmark.event", resource)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    # The daemon's own event loop (uvloop where installed).
    with asyncio.Runner(loop_factory=daemon_loop_factory()) as runner:
        per_call = runner.run(measure(args.calls, rounds=args.rounds))
    rows = [
        [kind, min(values), sum(values) / len(values), max(values)]
        for kind, values in per_call.items()
    ]
    print(table("CPU per call (ms, event loop thread)", ["call", "min", "mean", "max"], rows))
    write_results("prefect_api", {"calls": args.calls, "rounds": args.rounds, "ms": per_call})


if __name__ == "__main__":
    main()
