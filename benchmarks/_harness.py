"""The real peers, a driver that writes pods to the apiserver, and observers as processes.

The peers are the test harness's own (`tests/peers`): a kube-apiserver with etcd, and a
Prefect server from its cached venv. The driver talks to the apiserver over one pooled
HTTPS session with the admin token, so driving thousands of pods costs little CPU. Each
observer runs as its own process, measured from /proc (CPU: utime + stime; memory: VmRSS).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._common import REPO, cpu_seconds, environment_without, rss_mib, stop_process
from benchmarks._pods import flow_run_labels, now_rfc3339, pod_body, status_patch
from tests.peers import KubePeer, PrefectPeer
from tests.peers._util import cache_dir

REFERENCE_VENV = cache_dir() / "bench" / "ref-venv"
REFERENCE_PACKAGES = ("prefect-kubernetes==0.8.0", "psutil")
CONCURRENCY = 24


# --------------------------------------------------------------------------- sink


class Sink:
    """The recording sink (`benchmarks._sink`) as a child process."""

    def __init__(self, *, upstream: str | None) -> None:
        argv = [sys.executable, "-m", "benchmarks._sink"]
        if upstream:
            argv += ["--upstream", upstream]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=REPO)
        assert self.process.stdout is not None
        port = int(self.process.stdout.readline())
        self.base = f"http://127.0.0.1:{port}"
        self.api_url = f"{self.base}/api"
        self.upstream = upstream
        self._seen = 0
        self.arrivals: list[tuple[str, str, str, float]] = []
        self.requests: dict[str, int] = {}

    async def poll(self, session: aiohttp.ClientSession) -> None:
        async with session.get(f"{self.base}/_bench/arrivals?since={self._seen}") as answer:
            body = await answer.json()
        new = [tuple(item) for item in body["arrivals"]]
        self._seen += len(new)
        self.arrivals.extend(new)  # type: ignore[arg-type]
        self.requests = body["requests"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


# --------------------------------------------------------------------------- driver


@dataclass
class Pod:
    namespace: str
    name: str
    uid: str = ""
    written: dict[str, float] = field(default_factory=dict)
    """Phase (or 'Deleted') -> wall-clock time the write was sent."""


class Driver:
    """Creates, moves and deletes pods on the apiserver, at a set rate or as fast as it can."""

    def __init__(self, kube: KubePeer) -> None:
        self.kube = kube
        context = ssl.create_default_context(cafile=str(kube.ca_file))
        self.session = aiohttp.ClientSession(
            base_url=kube.server,
            connector=aiohttp.TCPConnector(limit=CONCURRENCY, ssl=context),
            headers={"Authorization": f"Bearer {kube.token}"},
        )
        self._namespaces: set[str] = set()

    async def close(self) -> None:
        await self.session.close()

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        for attempt in range(10):
            async with self.session.request(method, path, **kwargs) as answer:
                if answer.status == 429 or answer.status >= 500:
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                body: dict[str, Any] = await answer.json(content_type=None)
                if answer.status >= 400 and not (method == "DELETE" and answer.status == 404):
                    raise RuntimeError(f"{method} {path}: {answer.status} {body.get('message')}")
                return body
        raise RuntimeError(f"{method} {path}: the apiserver kept refusing")

    async def ensure_namespace(self, namespace: str) -> None:
        if namespace in self._namespaces:
            return
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        async with self.session.post("/api/v1/namespaces", json=body) as answer:
            if answer.status not in (201, 409):
                raise RuntimeError(f"namespace {namespace}: {answer.status}")
        self._namespaces.add(namespace)

    async def _paced(self, pods: Iterable[Pod], action: Any, rate: float | None) -> None:
        """Run `action(pod)` for each pod, started `rate` times a second (None: at once)."""
        limit = asyncio.Semaphore(CONCURRENCY * 2)
        start = time.monotonic()

        async def one(pod: Pod) -> None:
            try:
                await action(pod)
            finally:
                limit.release()

        tasks = []
        for index, pod in enumerate(pods):
            if rate:
                delay = start + index / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await limit.acquire()
            tasks.append(asyncio.create_task(one(pod)))
        await asyncio.gather(*tasks)

    async def create(
        self,
        namespace: str,
        count: int,
        *,
        labelled: bool,
        rate: float | None = None,
        flow_run_ids: list[str] | None = None,
    ) -> list[Pod]:
        """`count` pods; labelled with `flow_run_ids` in order when given (real flow runs),
        else with random ids."""
        await self.ensure_namespace(namespace)
        tag = os.urandom(3).hex()
        pods = [Pod(namespace, f"{'run' if labelled else 'app'}-{tag}-{i}") for i in range(count)]

        async def create_one(pod: Pod) -> None:
            index = int(pod.name.rsplit("-", 1)[1])
            run = flow_run_ids[index] if flow_run_ids else None
            body = pod_body(pod.name, flow_run_labels(index, run) if labelled else None)
            pod.written["Pending"] = time.time()
            created = await self._request("POST", f"/api/v1/namespaces/{namespace}/pods", json=body)
            pod.uid = created["metadata"]["uid"]

        await self._paced(pods, create_one, rate)
        return pods

    async def set_phase(self, pods: list[Pod], phase: str, *, rate: float | None = None) -> None:
        started = now_rfc3339()

        async def patch_one(pod: Pod) -> None:
            pod.written[phase] = time.time()
            await self._request(
                "PATCH",
                f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/status",
                json=status_patch(phase, started=started),
                headers={"Content-Type": "application/merge-patch+json"},
            )

        await self._paced(pods, patch_one, rate)

    async def delete(self, pods: list[Pod], *, rate: float | None = None) -> None:
        async def delete_one(pod: Pod) -> None:
            pod.written["Deleted"] = time.time()
            await self._request(
                "DELETE",
                f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}",
                params={"gracePeriodSeconds": "0"},
            )

        await self._paced(pods, delete_one, rate)


# --------------------------------------------------------------------------- observers


class Observer:
    """One observer process; `kind` is `ours` or `reference`."""

    def __init__(
        self,
        kind: str,
        *,
        kubeconfig: Path,
        api_url: str,
        log_dir: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.kind = kind
        self.extra_env = extra_env or {}
        self.kubeconfig = kubeconfig
        self.api_url = api_url
        self.log_path = log_dir / f"{kind}-{int(time.time() * 1000)}.log"
        self.home = log_dir / f"{kind}-home"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def argv_env(self) -> tuple[list[str], dict[str, str]]:
        base = environment_without("PREFECT_", "INFRA_OBSERVER_", "KUBECONFIG", "VIRTUAL_ENV")
        if self.kind == "ours":
            env = {
                **base,
                "INFRA_OBSERVER_KUBERNETES_ENABLED": "true",
                "INFRA_OBSERVER_KUBERNETES_KUBECONFIG": str(self.kubeconfig),
                "INFRA_OBSERVER_HEALTH_PORT": "0",
                "INFRA_OBSERVER_LOG_FORMAT": "json",
                "PREFECT_API_URL": self.api_url,
                **self.extra_env,
            }
            argv = [str(REPO / ".venv" / "bin" / "infra-observer"), "run"]
            profile = os.environ.get("BENCH_PROFILE_OURS")
            if profile:
                # cProfile writes its file when the daemon exits after SIGTERM.
                argv = [
                    str(REPO / ".venv" / "bin" / "python"),
                    "-m",
                    "cProfile",
                    "-o",
                    profile,
                    *argv,
                ]
            return argv, env
        self.home.mkdir(parents=True, exist_ok=True)
        env = {
            **base,
            "KUBECONFIG": str(self.kubeconfig),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_HOME": str(self.home),
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
        script = REPO / "benchmarks" / "_reference_observer.py"
        return [str(REFERENCE_VENV / "bin" / "python"), str(script)], env

    def start(self) -> None:
        argv, env = self.argv_env()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.started_at = time.time()
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> float:
        return rss_mib(self.pid)

    async def settle(
        self, *, quiet_cpu: float = 0.03, window: float = 2.0, limit: float = 60
    ) -> None:
        """Wait until the process uses almost no CPU for `window` seconds."""
        deadline = time.monotonic() + limit
        last = self.cpu()
        while time.monotonic() < deadline:
            await asyncio.sleep(window)
            if not self.alive():
                raise RuntimeError(f"{self.kind} observer exited; see {self.log_path}")
            now = self.cpu()
            if now - last < quiet_cpu:
                return
            last = now

    def stop(self) -> None:
        if self.process is None:
            return
        stop_process(self.process)
        self.process = None


def reference_available() -> str | None:
    """Why the reference observer cannot run, or None when it can."""
    python = REFERENCE_VENV / "bin" / "python"
    if not python.exists():
        return (
            f"{python} missing: create it with `python3.11 -m venv {REFERENCE_VENV} && "
            f"{REFERENCE_VENV}/bin/pip install {' '.join(REFERENCE_PACKAGES)}`"
        )
    check = subprocess.run(
        [str(python), "-c", "import prefect_kubernetes.observer"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PREFECT_HOME": "/tmp/ref-import-check"},
    )
    if check.returncode != 0:
        return f"prefect_kubernetes.observer does not import: {check.stderr[-500:]}"
    return None


__all__ = ["Driver", "KubePeer", "Observer", "Pod", "PrefectPeer", "Sink", "reference_available"]
