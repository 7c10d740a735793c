"""Leader election over a coordination.k8s.io Lease, as client-go does it.

A candidate takes the Lease when it is free or its holder has not renewed it for a whole
lease duration, as measured by this process's own clock from when it last saw the record
change (so clock skew between replicas does not matter). The leader renews every retry
period; if it cannot renew within the renew deadline it steps down by raising
`LeadershipLostError`, which stops the process after the emitter drained: the pod restarts
as a candidate. On a clean shutdown the leader releases the Lease so a standby takes over
at once. Writes carry the resourceVersion read, so two candidates never both win.

Requests go through the shared raw-JSON Kubernetes API client (`infra_observer.kubernetes_api`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import structlog

from infra_observer.config import KubernetesSettings, LeaderElectionSettings
from infra_observer.errors import SourceError
from infra_observer.kubernetes_api import KubeClient, lease_path, leases_path, read_body

log = structlog.get_logger(__name__)

_REQUEST_SECONDS = 10.0


class LeadershipLostError(SourceError):
    """The Lease could not be renewed in time: another replica may be leading now."""


class _Conflict(Exception):
    """Another replica wrote the Lease first (409)."""


def _micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, *, settings: LeaderElectionSettings, kubernetes: KubernetesSettings) -> None:
        self._settings = settings
        self._kubernetes = kubernetes
        self.identity = settings.identity or f"{socket.gethostname()}-{os.getpid()}"
        self._collection = leases_path(settings.namespace)
        self._path = lease_path(settings.namespace, settings.lease_name)
        self._client: KubeClient | None = None
        self._observed: tuple[str, str] | None = None
        self._observed_at = 0.0
        self.is_leader = False

    async def acquire(self) -> None:
        """Wait until this replica holds the Lease."""
        log.info(
            "leader_election_started",
            lease=self._settings.lease_name,
            namespace=self._settings.namespace,
            identity=self.identity,
        )
        # A Lease is polled: nothing signals its expiry.
        while not await self._try_acquire_or_renew():  # noqa: ASYNC110
            await asyncio.sleep(self._settings.retry_period_seconds)
        self.is_leader = True
        log.info("leader_acquired", identity=self.identity, lease=self._settings.lease_name)

    async def keep(self) -> None:
        """Renew for as long as the process runs; raise when the deadline passes unrenewed."""
        last_renewal = time.monotonic()
        while True:
            await asyncio.sleep(self._settings.retry_period_seconds)
            if await self._try_acquire_or_renew():
                last_renewal = time.monotonic()
            elif time.monotonic() - last_renewal > self._settings.renew_deadline_seconds:
                self.is_leader = False
                raise LeadershipLostError(
                    f"could not renew Lease {self._settings.namespace}/"
                    f"{self._settings.lease_name} within "
                    f"{self._settings.renew_deadline_seconds}s; stepping down"
                )

    async def release(self) -> None:
        """Give the Lease up, so a standby replica takes over without waiting for expiry."""
        if not self.is_leader:
            return
        self.is_leader = False
        try:
            lease = await self._read()
            spec = (lease or {}).get("spec") or {}
            if lease is not None and spec.get("holderIdentity") == self.identity:
                spec.pop("holderIdentity", None)
                spec["leaseDurationSeconds"] = 1
                spec["renewTime"] = _micro_time(datetime.now(UTC))
                await self._write("PUT", self._path, {**lease, "spec": spec})
                log.info("leader_released", identity=self.identity)
        except (httpx.HTTPError, OSError, TimeoutError, SourceError, _Conflict) as exc:
            log.warning("leader_release_failed", error=str(exc) or type(exc).__name__)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def _try_acquire_or_renew(self) -> bool:
        try:
            return await self._attempt()
        except _Conflict:
            return False  # another replica wrote first; look again next period
        except (httpx.HTTPError, OSError, TimeoutError, SourceError) as exc:
            log.warning("leader_election_error", error=str(exc) or type(exc).__name__)
            return False

    async def _attempt(self) -> bool:
        now = _micro_time(datetime.now(UTC))
        lease = await self._read()
        if lease is None:
            await self._write("POST", self._collection, self._body(now, transitions=0))
            return True
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        record = (holder, str(spec.get("renewTime") or ""))
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        duration = spec.get("leaseDurationSeconds") or self._settings.lease_duration_seconds
        expired = time.monotonic() - self._observed_at > duration
        if holder and holder != self.identity and not expired:
            return False
        ours = holder == self.identity
        body = self._body(now, transitions=int(spec.get("leaseTransitions") or 0) + (not ours))
        body["metadata"]["resourceVersion"] = (lease.get("metadata") or {}).get("resourceVersion")
        if ours and spec.get("acquireTime"):
            body["spec"]["acquireTime"] = spec["acquireTime"]
        await self._write("PUT", self._path, body)
        self._observed, self._observed_at = None, time.monotonic()
        return True

    def _body(self, now: str, *, transitions: int) -> dict[str, Any]:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self._settings.lease_name, "namespace": self._settings.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self._settings.lease_duration_seconds,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": transitions,
            },
        }

    async def _kube(self) -> KubeClient:
        if self._client is None:
            self._client = await KubeClient.connect(self._kubernetes)
        return self._client

    async def _read(self) -> dict[str, Any] | None:
        status, body = await self._call("GET", self._path, None)
        if status == 404:
            return None
        lease: dict[str, Any] = orjson.loads(body)
        return lease

    async def _write(self, method: str, path: str, lease: dict[str, Any]) -> None:
        await self._call(method, path, orjson.dumps(lease))

    async def _call(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        client = await self._kube()
        # The whole exchange, not each phase (httpx's limits are per phase).
        async with asyncio.timeout(_REQUEST_SECONDS):
            response = await client.request(
                method, path, body=body, limits=httpx.Timeout(_REQUEST_SECONDS)
            )
            content = await read_body(response)
        status = response.status_code
        if status == 409:
            raise _Conflict
        if status >= 400 and not (method == "GET" and status == 404):
            message = content[:300].decode(errors="replace")
            raise SourceError(
                f"{method} Lease {self._settings.namespace}/{self._settings.lease_name}: "
                f"{status} {message}; the ServiceAccount needs get and update on it "
                "(and create, unless the Lease exists)"
            )
        return status, content
