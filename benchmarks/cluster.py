"""End to end, memory and start-up on a real kube-apiserver; ours beside the reference.

    .venv/bin/python -m benchmarks.cluster --quick             # 1,000 pods, both observers
    .venv/bin/python -m benchmarks.cluster                     # 1,000 and 10,000 pods
    .venv/bin/python -m benchmarks.cluster --observers ours --sink loopback

Starts a kube-apiserver + etcd and a Prefect 3.8.8 server (the test peers), and the
recording sink in front of the Prefect server (or alone, `--sink loopback`). For each
observer, as its own process:

- memory: RSS when idle; with the e2e pods tracked; growth from unlabelled pods;
- e2e: N labelled pods created, then moved to Running, then Succeeded, each step paced
  at `--rate` writes/s; latency is from the write being sent to the apiserver to the
  event reaching the sink; CPU is the observer's own (utime + stime) over each step;
  then the pods are deleted and every event that still arrives for them is redundant;
- startup: N labelled Pending pods exist before the observer starts; the time from its
  process start to the last of their events, and the reads it made to the events API.

With `--flow-runs [STATE]` the pods' flow runs exist on the Prefect server (created first,
in STATE, SCHEDULED by default) so that reads and proposals are real; each scenario then
counts the orchestration-API calls an observer made, in total and per flow run, and the
runs' states afterwards. `--lifecycle on|off` sets ours' INFRA_OBSERVER_LIFECYCLE_ENABLED.

The reference observer (prefect-kubernetes 0.8.0 with kopf) runs from its own venv
(see `benchmarks/README.md`); it emits through Prefect's websocket client, which the
sink relays to the Prefect server. Nothing here fails on a number.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks import _flowruns
from benchmarks._cluster_options import parse_args
from benchmarks._cluster_report import missing_totals, report
from benchmarks._common import percentile, write_results
from benchmarks._harness import (
    Driver,
    KubePeer,
    Observer,
    Pod,
    PrefectPeer,
    Sink,
)

EVENT_OF_PHASE = {
    "Pending": "prefect.kubernetes.pod.pending",
    "Running": "prefect.kubernetes.pod.running",
    "Succeeded": "prefect.kubernetes.pod.succeeded",
}
POLL_SECONDS = 0.25

log = logging.getLogger("benchmarks.cluster")


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.logs = Path(tempfile.mkdtemp(prefix="io-bench-"))
        self.kube: KubePeer | None = None
        self.prefect: PrefectPeer | None = None
        self.sink: Sink | None = None
        self.driver: Driver | None = None
        self.http: aiohttp.ClientSession | None = None

    # ----------------------------------------------------------------- plumbing

    async def __aenter__(self) -> Run:
        self.kube = await asyncio.to_thread(KubePeer().start)
        upstream = None
        if self.args.sink == "prefect":
            self.prefect = await asyncio.to_thread(PrefectPeer().start)
            upstream = self.prefect.api_url.removesuffix("/api")
        self.sink = Sink(upstream=upstream)
        self.driver = Driver(self.kube)
        self.http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for closing in (self.driver, self.http):
            if closing is not None:
                await closing.close()
        if self.sink is not None:
            self.sink.stop()
        for peer in (self.prefect, self.kube):
            if peer is not None:
                await asyncio.to_thread(peer.stop)

    def observer(self, kind: str) -> Observer:
        assert self.kube is not None
        assert self.sink is not None
        extra = {}
        if kind == "ours" and self.args.flush_interval is not None:
            extra["INFRA_OBSERVER_EMITTER_FLUSH_INTERVAL_SECONDS"] = str(self.args.flush_interval)
        if kind == "ours" and self.args.read_coalesce is not None:
            extra["INFRA_OBSERVER_KUBERNETES_READ_COALESCE_SECONDS"] = str(self.args.read_coalesce)
        if kind == "ours" and self.args.lifecycle is not None:
            extra["INFRA_OBSERVER_LIFECYCLE_ENABLED"] = str(self.args.lifecycle == "on").lower()
        return Observer(
            kind,
            kubeconfig=self.kube.kubeconfig,
            api_url=self.sink.api_url,
            log_dir=self.logs,
            extra_env=extra,
        )

    async def arrivals_for(
        self, pods: list[Pod], phase: str, *, wait_seconds: float, since: float = 0.0
    ) -> dict[str, float]:
        """uid -> arrival time of the pod's first `phase` event (not before `since`)."""
        assert self.sink is not None
        assert self.http is not None
        wanted = {f"prefect.kubernetes.pod.{pod.uid}": pod.uid for pod in pods}
        name = EVENT_OF_PHASE[phase]
        found: dict[str, float] = {}
        scanned = 0
        deadline = time.monotonic() + wait_seconds
        while True:
            await self.sink.poll(self.http)
            for _, event, resource, arrived in self.sink.arrivals[scanned:]:
                uid = wanted.get(resource)
                if uid is not None and event == name and uid not in found and arrived >= since:
                    found[uid] = arrived
            scanned = len(self.sink.arrivals)
            if len(found) == len(wanted) or time.monotonic() > deadline:
                return found
            await asyncio.sleep(POLL_SECONDS)

    async def events_since(self, pods: list[Pod], since: float) -> int:
        assert self.sink is not None
        assert self.http is not None
        await self.sink.poll(self.http)
        resources = {f"prefect.kubernetes.pod.{pod.uid}" for pod in pods}
        return sum(1 for _, _, res, at in self.sink.arrivals if res in resources and at >= since)

    async def requests(self) -> dict[str, int]:
        assert self.sink is not None
        assert self.http is not None
        await self.sink.poll(self.http)
        return dict(self.sink.requests)

    async def flow_runs(self, count: int) -> list[str] | None:
        """With `--flow-runs`: `count` new runs in that state on the Prefect server, for the
        pods' labels. Without: None (the pods get random ids no server knows)."""
        if not self.args.flow_runs:
            return None
        assert self.prefect is not None
        began = time.monotonic()
        ids = await _flowruns.create(self.prefect.api_url, count, state_type=self.args.flow_runs)
        log.info("%d flow runs %s in %.1f s", count, self.args.flow_runs, time.monotonic() - began)
        return ids

    async def lifecycle_done(self, flow_run_ids: list[str] | None, *, limit: float) -> float:
        """With flow runs: wait for the orchestration-API calls to stop (the lifecycle waits
        on the server, not the CPU, so a quiet CPU says nothing of it); the seconds until
        the last call seen."""
        if flow_run_ids is None:
            return 0.0
        return await _flowruns.calls_stopped(self.requests, poll=POLL_SECONDS, limit=limit)

    async def lifecycle_calls(
        self, before: dict[str, int], flow_run_ids: list[str] | None
    ) -> dict[str, Any]:
        """The orchestration-API calls since `before`, and the runs' states now."""
        if flow_run_ids is None:
            return {}
        assert self.prefect is not None
        calls = _flowruns.calls(before, await self.requests(), flow_runs=len(flow_run_ids))
        states = await _flowruns.state_names(self.prefect.api_url, flow_run_ids)
        return {"calls": calls, "states": states}

    # ----------------------------------------------------------------- scenarios

    async def e2e_and_memory(self, kind: str) -> dict[str, Any]:
        """Idle RSS, then each e2e size; the largest also measures tracked and unlabelled."""
        assert self.driver is not None
        out: dict[str, Any] = {}
        observer = self.observer(kind)
        observer.start()
        try:
            await observer.settle(limit=90)
            cpu = observer.cpu()
            await asyncio.sleep(5)
            out["idle_cpu_ms_per_s"] = (observer.cpu() - cpu) / 5 * 1000
            out["idle_rss_mib"] = observer.rss()
            log.info("%s idle: %.1f MiB", kind, out["idle_rss_mib"])
            sizes = self.args.e2e_sizes
            for size in sizes:
                out[f"e2e_{size}"] = await self.e2e(observer, size, last=size == sizes[-1])
        finally:
            observer.stop()
        return out

    async def e2e(self, observer: Observer, size: int, *, last: bool) -> dict[str, Any]:
        assert self.driver is not None
        flow_run_ids = await self.flow_runs(size)
        requests = await self.requests()
        cpu = observer.cpu()
        pods, result = await self.phases(observer, size, flow_run_ids=flow_run_ids)
        # Proposals and log writes may still be under way once the last event is in: the
        # CPU per change counts all the work the changes caused, up to quiet.
        result["lifecycle_seconds_after_events"] = await self.lifecycle_done(
            flow_run_ids, limit=120
        )
        await observer.settle(limit=60)
        result["cpu_ms_per_change"] = (observer.cpu() - cpu) / (3 * size) * 1000
        if last:
            result["tracked_rss_mib"] = observer.rss()
            if self.args.unlabelled:
                result.update(await self.unlabelled(observer))
        deleted_at = time.time()
        await self.driver.delete(pods, rate=self.args.rate)
        await asyncio.sleep(3)
        await observer.settle(limit=60)
        result["events_after_deletion"] = await self.events_since(pods, deleted_at)
        result.update(await self.lifecycle_calls(requests, flow_run_ids))
        return result

    async def phases(
        self, observer: Observer, size: int, *, flow_run_ids: list[str] | None
    ) -> tuple[list[Pod], dict[str, Any]]:
        """The pods created (Pending), then Running, then Succeeded, each step paced; the
        latency and CPU of each step, until its events are all in."""
        assert self.driver is not None
        rate = self.args.rate
        namespace = f"e2e-{observer.kind}-{size}"
        result: dict[str, Any] = {"pods": size, "rate": rate}
        latencies: list[float] = []
        pods: list[Pod] = []
        first_write = time.time()
        last_arrival = 0.0
        delivered = 0
        for phase in ("Pending", "Running", "Succeeded"):
            cpu = observer.cpu()
            began = time.time()
            if phase == "Pending":
                pods = await self.driver.create(
                    namespace, size, labelled=True, rate=rate, flow_run_ids=flow_run_ids
                )
            else:
                await self.driver.set_phase(pods, phase, rate=rate)
            arrived = await self.arrivals_for(pods, phase, wait_seconds=30 + size / rate)
            cpu = observer.cpu() - cpu
            lat = [arrived[p.uid] - p.written[phase] for p in pods if p.uid in arrived]
            latencies += lat
            delivered += len(arrived)
            last_arrival = max([last_arrival, *arrived.values()])
            result[phase.lower()] = {
                "delivered": len(arrived),
                "missing": size - len(arrived),
                "cpu_seconds": cpu,
                "cpu_ms_per_pod": cpu / size * 1000,
                "p50_ms": percentile(lat, 0.5) * 1000,
                "p99_ms": percentile(lat, 0.99) * 1000,
                "seconds": time.time() - began,
            }
            log.info("%s e2e %d %s: %s", observer.kind, size, phase, result[phase.lower()])
        result["delivered"] = delivered
        result["delivered_per_second"] = delivered / max(1e-9, last_arrival - first_write)
        result["p50_ms"] = percentile(latencies, 0.5) * 1000
        result["p99_ms"] = percentile(latencies, 0.99) * 1000
        transitions_cpu = result["running"]["cpu_seconds"] + result["succeeded"]["cpu_seconds"]
        result["cpu_ms_per_transition"] = transitions_cpu / (2 * size) * 1000
        result["cpu_ms_per_new_pod"] = result["pending"]["cpu_ms_per_pod"]
        return pods, result

    async def unlabelled(self, observer: Observer) -> dict[str, Any]:
        assert self.driver is not None
        count = self.args.unlabelled
        before = observer.rss()
        cpu = observer.cpu()
        pods = await self.driver.create(f"apps-{observer.kind}", count, labelled=False)
        await observer.settle(limit=120)
        after = observer.rss()
        cpu = observer.cpu() - cpu
        await self.driver.delete(pods)
        log.info("%s unlabelled %d: %.1f -> %.1f MiB", observer.kind, count, before, after)
        return {
            "unlabelled_pods": count,
            "unlabelled_rss_growth_mib": after - before,
            "unlabelled_cpu_seconds": cpu,
        }

    async def startup(self, kinds: list[str], size: int) -> dict[str, dict[str, Any]]:
        """The same existing pods for every observer, the reference first (its start-up
        reads look for earlier events on the server, so it must see none of ours)."""
        assert self.driver is not None
        flow_run_ids = await self.flow_runs(size)
        pods = await self.driver.create(
            f"startup-{size}", size, labelled=True, flow_run_ids=flow_run_ids
        )
        out: dict[str, dict[str, Any]] = {}
        try:
            for kind in sorted(kinds, key=lambda k: k != "reference"):
                if out and flow_run_ids:
                    # The runs as the first observer found them, not as it left them.
                    assert self.prefect is not None
                    await _flowruns.reset(
                        self.prefect.api_url, flow_run_ids, state_type=self.args.flow_runs
                    )
                out[kind] = await self.startup_one(kind, pods, flow_run_ids=flow_run_ids)
        finally:
            await self.driver.delete(pods)
        return out

    async def startup_one(
        self, kind: str, pods: list[Pod], *, flow_run_ids: list[str] | None
    ) -> dict[str, Any]:
        requests = await self.requests()
        observer = self.observer(kind)
        observer.start()
        try:
            timeout = 60 + len(pods) * self.args.startup_timeout_per_pod
            arrived = await self.arrivals_for(
                pods, "Pending", wait_seconds=timeout, since=observer.started_at
            )
            seconds = (max(arrived.values()) - observer.started_at) if arrived else float("nan")
            lifecycle_seconds = await self.lifecycle_done(flow_run_ids, limit=120)
            await observer.settle(limit=60)
            after = await self.requests()
            reads = {
                key: after.get(key, 0) - requests.get(key, 0)
                for key in after
                if not key.startswith(("POST /api/events", "WS ", "ids in "))
                or key.startswith("POST /api/events/")
            }
            reads = {key: count for key, count in reads.items() if count}
            result = {
                "pods": len(pods),
                "delivered": len(arrived),
                "missing": len(pods) - len(arrived),
                "seconds_to_all_delivered": seconds,
                "events_api_reads": sum(n for k, n in reads.items() if "/events/" in k),
                "other_api_reads": sum(n for k, n in reads.items() if "/events/" not in k),
                "reads": reads,
                "cpu_seconds": observer.cpu(),
                "rss_mib": observer.rss(),
                "lifecycle_seconds_after_events": lifecycle_seconds,
                **await self.lifecycle_calls(requests, flow_run_ids),
            }
        finally:
            observer.stop()
        log.info("%s startup %d: %s", kind, len(pods), result)
        return result


async def run(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {kind: {} for kind in args.observers}
    async with Run(args) as bench:
        log.info("peers up; logs in %s", bench.logs)
        if "e2e" in args.scenarios:
            for kind in args.observers:
                try:
                    results[kind]["memory"] = await bench.e2e_and_memory(kind)
                except Exception as exc:  # report what was measured, and why the rest was not
                    log.exception("%s e2e failed", kind)
                    results[kind]["memory_error"] = repr(exc)
        if "startup" in args.scenarios:
            for size in args.startup_sizes:
                try:
                    for kind, data in (await bench.startup(args.observers, size)).items():
                        results[kind][f"startup_{size}"] = data
                except Exception as exc:
                    log.exception("startup %d failed", size)
                    for kind in args.observers:
                        results[kind][f"startup_{size}_error"] = repr(exc)
    missing_totals(results)
    return results


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    started = time.monotonic()
    results = asyncio.run(run(args))
    print(report(results, args))
    settings = {
        key: value
        for key, value in vars(args).items()
        if isinstance(value, int | float | str | list)
    }
    path = write_results(
        "cluster",
        {"settings": settings, "seconds": time.monotonic() - started, "observers": results},
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
