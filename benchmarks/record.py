"""Record the watch lines of one pod's life from a real kube-apiserver.

    .venv/bin/python -m benchmarks.record [--out benchmarks/data/pod-watch.jsonl]

Starts the test harness's kube-apiserver, watches pods labelled prefect.io/flow-run-id,
creates one pod shaped like a Prefect worker's, moves it to Running and Succeeded the way
a kubelet reports them, deletes it, and writes the watch lines exactly as the apiserver
sent them. `benchmarks.pipeline` replays them, with a fresh uid per replayed pod.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from benchmarks._common import REPO
from benchmarks._harness import Driver, KubePeer

DEFAULT_OUT = REPO / "benchmarks" / "data" / "pod-watch.jsonl"


async def record() -> list[bytes]:
    kube = await asyncio.to_thread(KubePeer().start)
    driver = Driver(kube)
    lines: list[bytes] = []
    try:
        await driver.ensure_namespace("flows")
        params = {"watch": "1", "labelSelector": "prefect.io/flow-run-id"}
        async with driver.session.get("/api/v1/pods", params=params, timeout=None) as answer:

            async def read() -> None:
                while line := await answer.content.readline():
                    lines.append(line)

            reader = asyncio.create_task(read())
            pods = await driver.create("flows", 1, labelled=True)
            for phase in ("Running", "Succeeded"):
                await asyncio.sleep(0.5)
                await driver.set_phase(pods, phase)
            await asyncio.sleep(0.5)
            await driver.delete(pods)
            await asyncio.sleep(1)
            reader.cancel()
    finally:
        await driver.close()
        await asyncio.to_thread(kube.stop)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    out = parser.parse_args().out
    lines = asyncio.run(record())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"".join(lines))
    print(f"{len(lines)} lines, {sum(map(len, lines)):,} bytes -> {out}")
    return 0 if len(lines) >= 4 else 1


if __name__ == "__main__":
    sys.exit(main())
