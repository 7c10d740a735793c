"""Idle memory of the daemon and what its imports cost, on a real kube-apiserver.

    .venv/bin/python -m benchmarks.imports [--sink loopback|stdout|both] [--repeat N] [--top N]
    .venv/bin/python -m benchmarks.imports --image [--in-cluster] [--context DIR]
                                           [--env NAME=VALUE] [--sink ...] [--repeat N]

Starts a kube-apiserver (the test peers) and runs `infra-observer run` with only the
Kubernetes source enabled, as its own process, from this checkout's `src/` (compiled to
bytecode first, as the image is, so no run pays for compiling). Events go to the loopback
sink (`benchmarks._sink`, through the events API client) or to stdout. Once the source is
synced and the process has used almost no CPU for a while, its VmRSS is read from /proc:
that is the idle figure, median of `--repeat` runs per sink.

One more run carries an import meter, set up before the daemon's first import: every
module load (create + exec, so a C extension's dlopen too) is timed and the process's
resident memory read before and after it. "Self" is what a module's own load added,
without the modules it imported; "total" includes them. The meter's own bookkeeping
makes that run's RSS a little higher, so it is reported apart. The table lists the
modules with the largest self cost, who first imported each, and the same summed per
top-level package.

With `--image`, the daemon is the built container image's instead (`benchmarks._image`):
the image tests/integration/test_image.py builds from this tree (or from the tree at
`--context`, for a before/after), run by the harness's dockerd read-only as 65532:65532 on
the host network, pointed at the same kube-apiserver (by a mounted kubeconfig, or with
`--in-cluster` by a mounted ServiceAccount token as in a pod) and sink, with any `--env`
added to its environment. Once synced and idle, the container process's VmRSS, RssAnon and
RssFile are read from /proc/<host pid>, and its start-up is the time from the container's
start to its `kubernetes_ready` line: medians of `--repeat` runs per sink. No import meter
in this mode.
"""

from __future__ import annotations

import argparse
import compileall
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import (
    REPO,
    environment_without,
    rss_mib,
    stop_process,
    table,
    wait_until_quiet,
    write_results,
)
from benchmarks._harness import KubePeer, Sink
from benchmarks._image import DockerPeer, Sample, credentials, idle_sample, median_sample
from tests.peers.image import REPO as IMAGE_CONTEXT
from tests.peers.image import Image, built_image

RUN = (
    "import sys\n"
    "from infra_observer.cli import main\n"
    "sys.argv[0] = 'infra-observer'\n"
    "sys.exit(main())\n"
)

# Runs first in the metered daemon. Only modules every interpreter has loaded by then
# (frozen importlib, posix, signal), so the meter adds no module of its own to the count.
METER = r"""
import _frozen_importlib as _bootstrap
import os as _os
import signal as _signal
import time as _time

def _install_meter(out_path):
    page = _os.sysconf("SC_PAGE_SIZE")
    load = _bootstrap._load_unlocked
    rows = []
    stack = []

    def rss():
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * page

    def metered_load(spec):
        parent = stack[-1][0] if stack else "-"
        frame = [spec.name, 0, 0]  # name, children's bytes, children's ns
        stack.append(frame)
        bytes_before, ns_before = rss(), _time.perf_counter_ns()
        try:
            return load(spec)
        finally:
            stack.pop()
            total_bytes = rss() - bytes_before
            total_ns = _time.perf_counter_ns() - ns_before
            rows.append((spec.name, parent, total_bytes - frame[1], total_bytes,
                         (total_ns - frame[2]) // 1000, total_ns // 1000))
            if stack:
                stack[-1][1] += total_bytes
                stack[-1][2] += total_ns

    def report(signum, frame):
        import sys
        lines = ["\t".join(map(str, row)) for row in rows]
        lines.append("#modules\t" + " ".join(sorted(sys.modules)))
        lines.append("#rss\t" + str(rss()))
        with open(out_path, "w") as out:
            out.write("\n".join(lines) + "\n")

    _bootstrap._load_unlocked = metered_load
    _signal.signal(_signal.SIGUSR1, report)

_install_meter(_os.environ.pop("IMPORT_METER_OUT"))
del _install_meter
"""


@dataclass
class Load:
    module: str
    importer: str
    self_kib: float
    total_kib: float
    self_ms: float
    total_ms: float


class Daemon:
    """`infra-observer run`, Kubernetes source only, as a process of its own."""

    def __init__(self, kube: KubePeer, *, sink: Sink | None, log_dir: Path) -> None:
        self.kube = kube
        self.sink = sink
        self.log_path = log_dir / f"daemon-{time.time_ns()}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, meter_out: Path | None = None) -> None:
        base = environment_without("PREFECT_", "INFRA_OBSERVER_", "KUBECONFIG", "PYTHON")
        env = {
            **base,
            # This checkout's code, whichever tree the interpreter was installed from.
            "PYTHONPATH": str(REPO / "src"),
            "INFRA_OBSERVER_KUBERNETES_ENABLED": "true",
            "INFRA_OBSERVER_KUBERNETES_KUBECONFIG": str(self.kube.kubeconfig),
            "INFRA_OBSERVER_HEALTH_PORT": "0",
            "INFRA_OBSERVER_LOG_FORMAT": "json",
        }
        if self.sink is not None:
            env["PREFECT_API_URL"] = self.sink.api_url
        code = RUN
        if meter_out is not None:
            env["IMPORT_METER_OUT"] = str(meter_out)
            code = METER + RUN
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", code, "run"],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
                cwd=tempfile.gettempdir(),
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def wait_idle(self, *, limit: float = 90, window: float = 2.0) -> None:
        """Until the source has synced and the process used < 30 ms of CPU in `window` s."""
        assert self.process is not None
        deadline = time.monotonic() + limit
        while b'"kubernetes_ready"' not in self.log_path.read_bytes():
            self._check_alive(deadline)
            time.sleep(0.2)
        wait_until_quiet(self.pid, deadline=deadline, check=self._check_alive, window=window)

    def _check_alive(self, deadline: float) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"the daemon exited; see {self.log_path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the daemon did not become idle; see {self.log_path}")

    def stop(self) -> None:
        if self.process is None:
            return
        stop_process(self.process)
        self.process = None


def idle_rss(kube: KubePeer, *, sink: Sink | None, log_dir: Path) -> float:
    daemon = Daemon(kube, sink=sink, log_dir=log_dir)
    daemon.start()
    try:
        daemon.wait_idle()
        samples = []
        for _ in range(3):
            samples.append(rss_mib(daemon.pid))
            time.sleep(0.5)
        return statistics.median(samples)
    finally:
        daemon.stop()


def metered(
    kube: KubePeer, *, sink: Sink | None, log_dir: Path
) -> tuple[list[Load], list[str], float]:
    out = log_dir / f"meter-{time.time_ns()}.tsv"
    daemon = Daemon(kube, sink=sink, log_dir=log_dir)
    daemon.start(meter_out=out)
    try:
        daemon.wait_idle()
        os.kill(daemon.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not (out.exists() and out.read_text().rstrip().split("\n")[-1].startswith("#rss")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no meter report; see {daemon.log_path}")
            time.sleep(0.1)
    finally:
        daemon.stop()
    loads: list[Load] = []
    modules: list[str] = []
    rss = 0.0
    for line in out.read_text().splitlines():
        fields = line.split("\t")
        if fields[0] == "#modules":
            modules = fields[1].split()
        elif fields[0] == "#rss":
            rss = int(fields[1]) / 2**20
        else:
            name, importer, self_b, total_b, self_us, total_us = fields
            loads.append(
                Load(
                    name,
                    importer,
                    int(self_b) / 1024,
                    int(total_b) / 1024,
                    int(self_us) / 1000,
                    int(total_us) / 1000,
                )
            )
    return loads, modules, rss


def by_package(loads: list[Load]) -> list[tuple[str, int, float, float]]:
    totals: dict[str, list[float]] = {}
    for load in loads:
        entry = totals.setdefault(load.module.split(".")[0], [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += load.self_kib
        entry[2] += load.self_ms
    rows = [(name, int(n), kib, ms) for name, (n, kib, ms) in totals.items()]
    return sorted(rows, key=lambda row: -row[2])


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sink", choices=["loopback", "stdout", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=3, help="idle runs per sink")
    parser.add_argument("--top", type=int, default=25, help="rows in the module tables")
    parser.add_argument(
        "--image", action="store_true", help="measure the built container image's daemon"
    )
    parser.add_argument(
        "--context",
        type=Path,
        default=IMAGE_CONTEXT,
        help="with --image: the tree to build the image from (default: this checkout)",
    )
    parser.add_argument(
        "--in-cluster",
        action="store_true",
        help="with --image: ServiceAccount credentials, as in a pod, instead of a kubeconfig",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="with --image: one more variable for the container (e.g. PYTHONOPTIMIZE=)",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_arguments()
    sinks = ["loopback", "stdout"] if args.sink == "both" else [args.sink]
    if args.image:
        return image_main(args, sinks)
    log_dir = Path(tempfile.mkdtemp(prefix="io-bench-imports-"))
    compileall.compile_dir(REPO / "src", quiet=1)
    measured = measure_checkout(sinks, repeat=args.repeat, log_dir=log_dir)
    print_checkout_tables(measured, top=args.top)
    print(f"results: {write_results('imports', measured.results())}")
    return 0


@dataclass
class CheckoutRun:
    """The figures of the checkout's daemon: idle VmRSS per sink, and the metered run."""

    sinks: list[str]
    idle: dict[str, list[float]]
    loads: list[Load]
    modules: list[str]
    metered_rss: float
    log_dir: Path

    def results(self) -> dict[str, Any]:
        """The results file's content."""
        return {
            "idle_rss_mib": {name: statistics.median(values) for name, values in self.idle.items()},
            "idle_rss_runs_mib": self.idle,
            "metered_sink": self.sinks[0],
            "metered_rss_mib": self.metered_rss,
            "modules_loaded": len(self.loads),
            "modules_at_idle": len(self.modules),
            "loads": [vars(load) for load in self.loads],
            "packages": [
                {"package": name, "modules": n, "self_kib": kib, "self_ms": ms}
                for name, n, kib, ms in by_package(self.loads)
            ],
            "sys_modules_at_idle": self.modules,
            "logs": str(self.log_dir),
        }


def measure_checkout(sinks: list[str], *, repeat: int, log_dir: Path) -> CheckoutRun:
    """`repeat` idle runs per sink, then the metered run, on a kube-apiserver of their own."""
    kube = KubePeer().start()
    loopback = Sink(upstream=None) if "loopback" in sinks else None
    try:
        idle: dict[str, list[float]] = {}
        for name in sinks:
            sink = loopback if name == "loopback" else None
            idle[name] = [idle_rss(kube, sink=sink, log_dir=log_dir) for _ in range(repeat)]
        loads, modules, metered_rss = metered(kube, sink=loopback, log_dir=log_dir)
    finally:
        if loopback is not None:
            loopback.stop()
        kube.stop()
    return CheckoutRun(sinks, idle, loads, modules, metered_rss, log_dir)


def print_checkout_tables(run: CheckoutRun, *, top: int) -> None:
    """Idle VmRSS per sink, then the costliest module loads and top-level packages."""
    ranked = sorted(run.loads, key=lambda load: -load.self_kib)
    print(
        table(
            "Idle daemon (Kubernetes source only, synced, no pods), VmRSS",
            ["sink", "median MiB", "runs"],
            [
                [name, statistics.median(values), " ".join(f"{v:.2f}" for v in values)]
                for name, values in run.idle.items()
            ],
        )
    )
    print()
    print(
        table(
            f"Top {top} module loads by resident memory added "
            f"({len(run.loads)} loads; metered run, {run.sinks[0]} sink, "
            f"{run.metered_rss:.2f} MiB)",
            ["module", "first imported by", "self KiB", "total KiB", "self ms", "total ms"],
            [
                [
                    load.module,
                    load.importer,
                    load.self_kib,
                    load.total_kib,
                    load.self_ms,
                    load.total_ms,
                ]
                for load in ranked[:top]
            ],
        )
    )
    print()
    print(
        table(
            f"Top {top} top-level packages (sum of their modules' self cost)",
            ["package", "modules", "self KiB", "self ms"],
            [list(row) for row in by_package(run.loads)[:top]],
        )
    )


def image_main(args: argparse.Namespace, sinks: list[str]) -> int:
    log_dir = Path(tempfile.mkdtemp(prefix="io-bench-image-"))
    context = args.context.resolve()
    measured = measure_image(args, sinks, context=context, log_dir=log_dir)
    medians = measured.medians()
    print_image_table(measured, args)
    warnings = sum(int(m["warnings"]) for m in medians.values())
    if warnings:
        print(f"{warnings} warning or error lines in the daemon's logs: {log_dir}")
    image_bytes, base_bytes = measured.image_bytes, measured.base_bytes
    print(
        f"image: {image_bytes / 1e6:.1f} MB ({(image_bytes - base_bytes) / 1e6:.1f} MB "
        f"on the runtime base's {base_bytes / 1e6:.1f} MB)"
    )
    data: dict[str, Any] = {
        "mode": "image",
        "context": str(context),
        "image": measured.image.tag,
        "image_bytes": image_bytes,
        "runtime_base_bytes": base_bytes,
        "credentials": "in-cluster" if args.in_cluster else "kubeconfig",
        "env": args.env,
        "idle": medians,
        "idle_runs": {name: [vars(s) for s in samples] for name, samples in measured.runs.items()},
        "logs": str(log_dir),
    }
    print(f"results: {write_results('imports-image', data)}")
    return 0


@dataclass
class ImageRun:
    """The figures of the image's daemon: idle samples per sink, and the image's size."""

    image: Image
    runs: dict[str, list[Sample]]
    image_bytes: int
    base_bytes: int

    def medians(self) -> dict[str, dict[str, float]]:
        return {name: median_sample(samples) for name, samples in self.runs.items()}


def measure_image(
    args: argparse.Namespace, sinks: list[str], *, context: Path, log_dir: Path
) -> ImageRun:
    """Build (or load) the image of `context`, then `--repeat` idle containers per sink."""
    dockerd = DockerPeer().start()
    kube: KubePeer | None = None
    loopback: Sink | None = None
    try:
        image = built_image(dockerd, root=context)
        kube = KubePeer().start()
        loopback = Sink(upstream=None) if "loopback" in sinks else None
        options = credentials(kube, log_dir / "credentials", in_cluster=args.in_cluster)
        for item in args.env:
            options += ["--env", item]
        runs = {
            name: [
                idle_sample(
                    image,
                    options=options,
                    api_url=loopback.api_url if name == "loopback" and loopback else None,
                    log_dir=log_dir,
                )
                for _ in range(args.repeat)
            ]
            for name in sinks
        }
        image_bytes = image.inspect(image.tag)["Size"]
        base_bytes = image.inspect(image.runtime_base)["Size"]
    finally:
        if loopback is not None:
            loopback.stop()
        if kube is not None:
            kube.stop()
        dockerd.stop()
    return ImageRun(image, runs, image_bytes, base_bytes)


def print_image_table(run: ImageRun, args: argparse.Namespace) -> None:
    """The idle figures per sink: medians, and VmRSS of each run."""
    credentials_used = "ServiceAccount" if args.in_cluster else "kubeconfig"
    print(
        table(
            f"Idle daemon in the image {run.image.tag} (Kubernetes source only, "
            f"{credentials_used}, synced, no pods{''.join(', ' + item for item in args.env)}), "
            f"median of {args.repeat}",
            [
                "sink",
                "VmRSS MiB",
                "VmRSS bytes",
                "RssAnon MiB",
                "RssFile MiB",
                "ready s",
                "VmRSS MiB of each run",
            ],
            [
                [
                    name,
                    m["vm_rss_mib"],
                    int(m["vm_rss_bytes"]),
                    m["rss_anon_mib"],
                    m["rss_file_mib"],
                    m["ready_seconds"],
                    " ".join(f"{s.vm_rss_mib:.2f}" for s in run.runs[name]),
                ]
                for name, m in run.medians().items()
            ],
        )
    )


if __name__ == "__main__":
    sys.exit(main())
