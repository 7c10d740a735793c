"""Pipeline throughput: pod watch lines through the daemon's own code to a loopback sink.

    .venv/bin/python -m benchmarks.pipeline [--quick] [--pods N] [--profile FILE] [--synthetic]

Each pod is the watch lines of one pod's life recorded from a real kube-apiserver
(`benchmarks/data/pod-watch.jsonl`, made by `benchmarks.record`: ADDED Pending, MODIFIED
Running, MODIFIED Succeeded, MODIFIED on deletion, DELETED; 6-8 KB each), replayed with
a fresh uid per pod: three transitions per pod. `--synthetic` uses generated lines of
the same shape instead (`_watchlines.py`). The lines go through the Kubernetes
source's line handler (decode, translate, build the event), the emitter (validation,
follows, batching) and the events API sink (serialize, POST) to a loopback sink in
another process, which answers 204. Two decode-only baselines parse the same lines and
do nothing else: a full decode (`orjson.loads`, every field built) and the source's own
decoder (`wire.Decoder`, only the fields it reads). Rates are per CPU second of this process, so
they are per core; the sink's own CPU is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import logging
import subprocess
import sys
import time
import urllib.request
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from benchmarks._common import REPO, table, write_results
from benchmarks._watchlines import replayed_lines, watch_lines
from infra_observer.cli import daemon_loop_factory, prepare_collector
from infra_observer.config import EmitterSettings, KubernetesSettings, LogSettings, PrefectSettings
from infra_observer.emitter import Emitter, events_api_sink
from infra_observer.logs import configure_logging
from infra_observer.metrics import Metrics
from infra_observer.sources.kubernetes.watch import Scope, ScopeWatch
from infra_observer.sources.kubernetes.wire import Decoder

RECORDED = REPO / "benchmarks" / "data" / "pod-watch.jsonl"


def start_sink() -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._sink"], stdout=subprocess.PIPE, cwd=REPO
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())
    return process, f"http://127.0.0.1:{port}"


def sink_arrivals(base: str) -> int:
    with urllib.request.urlopen(f"{base}/_bench/arrivals?since=0", timeout=30) as answer:
        return len(json.loads(answer.read())["arrivals"])


def decode_only(lines: list[bytes], decode: Any) -> float:
    started = time.process_time()
    for line in lines:
        message = decode(line)
        message["type"]
        message["object"]
    return time.process_time() - started


async def pipeline(lines: list[bytes], sink_url: str) -> dict[str, float]:
    metrics = Metrics(CollectorRegistry())
    emitter_settings = EmitterSettings()
    sink = events_api_sink(PrefectSettings(api_url=f"{sink_url}/api"), emitter_settings)
    emitter = Emitter(sink=sink, settings=emitter_settings, metrics=metrics)
    await emitter.open()
    watch = ScopeWatch(
        scope=Scope(None), settings=KubernetesSettings(), handoff=emitter, metrics=metrics
    )
    delivery = asyncio.create_task(emitter.run())
    await asyncio.sleep(0.1)  # let the sink check finish outside the measurement
    cpu, wall = time.process_time(), time.perf_counter()
    handle = watch.list_watch.handle_line
    for line in lines:
        await handle(line)
    emitter.stop(120)
    await delivery
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await sink.aclose()
    return {"cpu_seconds": cpu, "wall_seconds": wall, "tracked_pods_after": len(watch.pods)}


def main() -> int:
    args = parse_arguments()
    pods = args.pods or (2_000 if args.quick else 10_000)
    configure_logging(LogSettings(level="info", format="json"))
    # Queue-full warnings are expected here: the lines come faster than any delivery.
    logging.getLogger().setLevel(logging.ERROR)
    lines = pod_lines(pods, synthetic=args.synthetic)
    measured = measure(lines, profile=args.profile)
    data = pipeline_results(measured, pods=pods, lines=lines, args=args)
    print_pipeline_table(data)
    wall = data["pipeline_wall_seconds"]
    print(f"wall: {wall:.2f}s; results: {write_results('pipeline', data)}")
    return 0 if data["delivered"] == data["transitions"] else 1


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 pods instead of 10,000")
    parser.add_argument("--pods", type=int, default=None)
    parser.add_argument("--profile", default=None, help="write cProfile stats of the pipeline")
    parser.add_argument("--synthetic", action="store_true", help="generated lines, not recorded")
    return parser.parse_args()


def pod_lines(pods: int, *, synthetic: bool) -> list[bytes]:
    """The watch lines of `pods` pods: the recorded pod replayed, or generated ones."""
    if synthetic:
        return list(watch_lines(pods))
    recorded = RECORDED.read_bytes().splitlines(keepends=True)
    return list(replayed_lines(recorded, pods))


def measure(lines: list[bytes], *, profile: str | None) -> dict[str, float]:
    """CPU seconds of the two decode-only baselines, then the pipeline's CPU and wall seconds
    to a loopback sink (profiled into `profile` if given) and the events the sink received."""
    process, sink_url = start_sink()
    try:
        prepare_collector()  # the daemon's settings, for the baselines too
        gc.collect()
        decode_cpu = decode_only(lines, orjson.loads)
        gc.collect()
        shape_cpu = decode_only(lines, Decoder().watch_line)
        gc.collect()
        profiler = cProfile.Profile()
        if profile:
            profiler.enable()
        # The daemon's own event loop (uvloop where installed).
        with asyncio.Runner(loop_factory=daemon_loop_factory()) as runner:
            result = runner.run(pipeline(lines, sink_url))
        if profile:
            profiler.disable()
            profiler.dump_stats(profile)
        delivered = sink_arrivals(sink_url)
    finally:
        process.terminate()
        process.wait(10)
    return {
        "decode_cpu_seconds": decode_cpu,
        "shape_decode_cpu_seconds": shape_cpu,
        "pipeline_cpu_seconds": result["cpu_seconds"],
        "pipeline_wall_seconds": result["wall_seconds"],
        "delivered": delivered,
    }


def pipeline_results(
    measured: dict[str, float], *, pods: int, lines: list[bytes], args: argparse.Namespace
) -> dict[str, Any]:
    """The results file's content: rates per CPU second and the pipeline's share of each
    decode-only rate."""
    transitions = pods * 3
    cpu, wall = measured["pipeline_cpu_seconds"], measured["pipeline_wall_seconds"]
    decode_cpu, shape_cpu = measured["decode_cpu_seconds"], measured["shape_decode_cpu_seconds"]
    return {
        "pods": pods,
        "lines": len(lines),
        "mean_line_bytes": sum(len(line) for line in lines) / len(lines),
        "transitions": transitions,
        "delivered": int(measured["delivered"]),
        "pipeline_cpu_seconds": cpu,
        "pipeline_wall_seconds": wall,
        "transitions_per_cpu_second": transitions / cpu,
        "transitions_per_wall_second": transitions / wall,
        "cpu_us_per_event": cpu / transitions * 1e6,
        "decode_cpu_seconds": decode_cpu,
        "decode_transitions_per_cpu_second": transitions / decode_cpu,
        "decode_lines_per_cpu_second": len(lines) / decode_cpu,
        "share_of_decode_rate": decode_cpu / cpu,
        "shape_decode_cpu_seconds": shape_cpu,
        "shape_decode_transitions_per_cpu_second": transitions / shape_cpu,
        "share_of_shape_decode_rate": shape_cpu / cpu,
        "profiled": bool(args.profile),
        "lines_from": "synthetic" if args.synthetic else str(RECORDED.relative_to(REPO)),
    }


def print_pipeline_table(data: dict[str, Any]) -> None:
    """Rate per core and CPU per event of each baseline and of the pipeline."""
    transitions = data["transitions"]
    decode_cpu, shape_cpu = data["decode_cpu_seconds"], data["shape_decode_cpu_seconds"]
    print(
        table(
            f"Pipeline: {data['pods']:,} pods, {data['lines']:,} watch lines of "
            f"{data['mean_line_bytes']:,.0f} B, {transitions:,} transitions "
            f"({data['delivered']:,} delivered)",
            ["measure", "transitions/s per core", "CPU µs per event", "CPU s"],
            [
                [
                    "decode only, full (orjson.loads)",
                    data["decode_transitions_per_cpu_second"],
                    decode_cpu / transitions * 1e6,
                    decode_cpu,
                ],
                [
                    "decode only, read fields (wire.Decoder)",
                    data["shape_decode_transitions_per_cpu_second"],
                    shape_cpu / transitions * 1e6,
                    shape_cpu,
                ],
                [
                    "parse→translate→build→batch→POST",
                    data["transitions_per_cpu_second"],
                    data["cpu_us_per_event"],
                    data["pipeline_cpu_seconds"],
                ],
                ["pipeline / full decode rate", f"{data['share_of_decode_rate']:.0%}", "", ""],
                [
                    "pipeline / read-fields decode rate",
                    f"{data['share_of_shape_decode_rate']:.0%}",
                    "",
                    "",
                ],
            ],
        )
    )


if __name__ == "__main__":
    sys.exit(main())
