"""The built image's daemon, as users run it, measured from the host's /proc.

The image is the one tests/integration/test_image.py builds (`tests.peers.image`: the real
Dockerfile on the stand-in bases, loaded from the cache when this tree was built before),
in the harness's dockerd. The container runs read-only as 65532:65532 with a tmpfs on /tmp,
on the host network (the harness's dockerd has no bridge), Kubernetes source only, pointed
at the benchmark's kube-apiserver: through a kubeconfig mounted read-only, or with
`in_cluster` the way a pod gets its credentials (a ServiceAccount token and CA mounted at
/var/run/secrets/kubernetes.io/serviceaccount, KUBERNETES_SERVICE_HOST/PORT). Its process
is found by `docker inspect -f {{.State.Pid}}` and read from /proc/<pid> like any other.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import statistics
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks._common import wait_until_quiet
from tests.peers import DockerPeer, KubePeer
from tests.peers.image import Image
from tests.peers.kube import write_kubeconfig

KUBECONFIG_DIR = "/etc/infra-observer-bench"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM")


@dataclass
class Sample:
    """One container's idle memory (KiB, as /proc/<pid>/status gives it) and start-up."""

    vm_rss_kib: int
    rss_anon_kib: int
    rss_file_kib: int
    rss_shmem_kib: int
    vm_hwm_kib: int
    ready_seconds: float
    warnings: int

    @property
    def vm_rss_mib(self) -> float:
        return self.vm_rss_kib / 1024


def status(pid: int) -> dict[str, int]:
    """The memory lines of /proc/<pid>/status, in KiB."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in STATUS_FIELDS:
            found[key] = int(value.split()[0])
    return found


def credentials(kube: KubePeer, directory: Path, *, in_cluster: bool) -> list[str]:
    """Files the container reads its credentials from, and the `docker run` options for them.

    The peer keeps its own files private (0600 under a 0700 directory): copies readable by
    the container's user go to `directory`, which is mounted read-only."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    ca = kube.ca_file.read_bytes()
    if in_cluster:
        (directory / "ca.crt").write_bytes(ca)
        (directory / "token").write_text(kube.token)
        (directory / "namespace").write_text("default")
        target = SERVICE_ACCOUNT_DIR
        server = urlsplit(kube.server)
        env = [
            f"KUBERNETES_SERVICE_HOST={server.hostname}",
            f"KUBERNETES_SERVICE_PORT={server.port}",
        ]
    else:
        (directory / "ca.crt").write_bytes(ca)
        write_kubeconfig(
            directory / "kubeconfig",
            server=kube.server,
            ca_file=Path(KUBECONFIG_DIR) / "ca.crt",
            token=kube.token,
            user="admin",
        )
        target = KUBECONFIG_DIR
        env = [f"INFRA_OBSERVER_KUBERNETES_KUBECONFIG={KUBECONFIG_DIR}/kubeconfig"]
    for file in directory.iterdir():
        file.chmod(0o644)
    options = ["--volume", f"{directory}:{target}:ro"]
    for item in env:
        options += ["--env", item]
    return options


def timestamp(text: str) -> dt.datetime:
    """An RFC 3339 time from Docker (nanoseconds) or structlog (microseconds)."""
    text = re.sub(r"(\.\d{6})\d*", r"\1", text.replace("Z", "+00:00"))
    return dt.datetime.fromisoformat(text)


class Container:
    """`infra-observer run` in the image, Kubernetes source only."""

    def __init__(self, image: Image, *, options: list[str], api_url: str | None) -> None:
        self.image = image
        self.name = f"io-bench-{uuid.uuid4().hex[:8]}"
        self.options = [
            "--tmpfs",
            "/tmp",
            *options,
            "--env",
            "INFRA_OBSERVER_KUBERNETES_ENABLED=true",
            "--env",
            "INFRA_OBSERVER_LOG_FORMAT=json",
            # Host network: any free port on loopback, not the image's 0.0.0.0:8080.
            "--env",
            "INFRA_OBSERVER_HEALTH_HOST=127.0.0.1",
            "--env",
            "INFRA_OBSERVER_HEALTH_PORT=0",
        ]
        if api_url is not None:
            self.options += ["--env", f"PREFECT_API_URL={api_url}"]
        self.pid = 0

    def start(self) -> None:
        self.image.run(self.name, *self.options)
        self.pid = int(self.image.cli("inspect", "-f", "{{.State.Pid}}", self.name).stdout)

    def logs(self) -> str:
        result = self.image.cli("logs", self.name, check=False)
        return result.stdout + result.stderr

    def _check(self, deadline: float) -> None:
        state = self.image.inspect(self.name)["State"]
        if not state["Running"]:
            code = state["ExitCode"]
            raise RuntimeError(f"the container exited ({code}):\n{self.logs()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the container did not become idle:\n{self.logs()[-3000:]}")

    def ready_seconds(self, *, limit: float = 90) -> float:
        """Until the source has synced: seconds from the container's start to that log line."""
        deadline = time.monotonic() + limit
        while True:
            for line in self.logs().splitlines():
                if '"kubernetes_ready"' in line:
                    started = self.image.inspect(self.name)["State"]["StartedAt"]
                    ready = timestamp(json.loads(line)["timestamp"])
                    return (ready - timestamp(started)).total_seconds()
            self._check(deadline)
            time.sleep(0.2)

    def wait_idle(self, *, limit: float = 90, window: float = 2.0) -> None:
        """Until the process used < 30 ms of CPU in `window` s (as the default mode)."""
        deadline = time.monotonic() + limit
        wait_until_quiet(self.pid, deadline=deadline, check=self._check, window=window)

    def warnings(self) -> int:
        levels = ('"level":"warning"', '"level":"error"', '"level":"critical"', "Traceback")
        return sum(1 for line in self.logs().splitlines() if any(m in line for m in levels))

    def remove(self) -> None:
        self.image.cli("rm", "--force", self.name, check=False)


def idle_sample(image: Image, *, options: list[str], api_url: str | None, log_dir: Path) -> Sample:
    """One container: start, wait until synced and idle, read /proc three times, remove."""
    container = Container(image, options=options, api_url=api_url)
    container.start()
    try:
        ready = container.ready_seconds()
        container.wait_idle()
        readings = []
        for _ in range(3):
            readings.append(status(container.pid))
            time.sleep(0.5)
        middle = sorted(readings, key=lambda r: r["VmRSS"])[len(readings) // 2]
        warnings = container.warnings()
        (log_dir / f"{container.name}.log").write_text(container.logs())
    finally:
        container.remove()
    return Sample(
        vm_rss_kib=middle["VmRSS"],
        rss_anon_kib=middle["RssAnon"],
        rss_file_kib=middle["RssFile"],
        rss_shmem_kib=middle.get("RssShmem", 0),
        vm_hwm_kib=middle["VmHWM"],
        ready_seconds=ready,
        warnings=warnings,
    )


def median_sample(samples: list[Sample]) -> dict[str, float]:
    """Each field's median over the runs (KiB fields also in MiB and bytes)."""
    fields = ("vm_rss_kib", "rss_anon_kib", "rss_file_kib", "rss_shmem_kib", "vm_hwm_kib")
    result: dict[str, float] = {}
    for name in fields:
        kib = statistics.median(getattr(s, name) for s in samples)
        stem = name.removesuffix("_kib")
        result[f"{stem}_mib"] = kib / 1024
        result[f"{stem}_bytes"] = kib * 1024
    result["ready_seconds"] = statistics.median(s.ready_seconds for s in samples)
    result["warnings"] = sum(s.warnings for s in samples)
    return result


__all__ = ["DockerPeer", "Sample", "credentials", "idle_sample", "median_sample"]
