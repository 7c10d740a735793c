"""Leader election over a coordination.k8s.io Lease, as client-go does it.

A candidate takes the Lease when it is free or its holder has not renewed it for a whole
lease duration, as measured by this process's own clock from when it last saw the record
change (so clock skew between replicas does not matter). The leader renews every retry
period; if it cannot renew within the renew deadline it steps down by raising
`LeadershipLostError`, which stops the process after the emitter drained: the pod restarts
as a candidate. On a clean shutdown the leader releases the Lease so a standby takes over
at once.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from datetime import UTC, datetime
from typing import Any

import structlog

from infra_observer.config import KubernetesSettings, LeaderElectionSettings
from infra_observer.errors import SourceError

log = structlog.get_logger(__name__)


class LeadershipLostError(SourceError):
    """The Lease could not be renewed in time: another replica may be leading now."""


def _micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, *, settings: LeaderElectionSettings, kubernetes: KubernetesSettings) -> None:
        self._settings = settings
        self._kubernetes = kubernetes
        self.identity = settings.identity or f"{socket.gethostname()}-{os.getpid()}"
        self._api: Any = None
        self._api_client: Any = None
        self._observed: tuple[str, str] | None = None
        self._observed_at = 0.0
        self.is_leader = False

    async def _coordination(self) -> Any:
        if self._api is None:
            from kubernetes_asyncio import client

            from infra_observer.sources.kubernetes.client import load_configuration

            configuration = await load_configuration(self._kubernetes)
            self._api_client = client.ApiClient(configuration=configuration)
            self._api = client.CoordinationV1Api(self._api_client)
        return self._api

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
        from kubernetes_asyncio.client.exceptions import ApiException

        api = await self._coordination()
        try:
            lease = await api.read_namespaced_lease(
                self._settings.lease_name, self._settings.namespace
            )
            if lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.lease_duration_seconds = 1
                lease.spec.renew_time = datetime.now(UTC)
                await api.replace_namespaced_lease(
                    self._settings.lease_name, self._settings.namespace, lease
                )
                log.info("leader_released", identity=self.identity)
        except (ApiException, OSError) as exc:
            log.warning("leader_release_failed", error=str(exc))
        self.is_leader = False

    async def aclose(self) -> None:
        if self._api_client is not None:
            await self._api_client.close()

    async def _try_acquire_or_renew(self) -> bool:
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            return await self._attempt()
        except ApiException as exc:
            if exc.status == 409:  # another replica wrote first; look again next period
                return False
            log.warning("leader_election_error", status=exc.status, reason=exc.reason)
            return False
        except (OSError, TimeoutError) as exc:
            log.warning("leader_election_error", error=str(exc) or type(exc).__name__)
            return False

    async def _attempt(self) -> bool:
        from kubernetes_asyncio.client.exceptions import ApiException

        api = await self._coordination()
        name, namespace = self._settings.lease_name, self._settings.namespace
        now = datetime.now(UTC)
        try:
            lease = await api.read_namespaced_lease(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            await api.create_namespaced_lease(namespace, self._spec_body(now, transitions=0))
            return True
        spec = lease.spec
        holder = spec.holder_identity or ""
        record = (holder, str(spec.renew_time))
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        duration = spec.lease_duration_seconds or self._settings.lease_duration_seconds
        expired = time.monotonic() - self._observed_at > duration
        if holder and holder != self.identity and not expired:
            return False
        transitions = (spec.lease_transitions or 0) + (0 if holder == self.identity else 1)
        body = self._spec_body(now, transitions=transitions)
        body["metadata"]["resourceVersion"] = lease.metadata.resource_version
        if holder == self.identity and spec.acquire_time is not None:
            body["spec"]["acquireTime"] = _micro_time(spec.acquire_time)
        await api.replace_namespaced_lease(name, namespace, body)
        self._observed, self._observed_at = None, time.monotonic()
        return True

    def _spec_body(self, now: datetime, *, transitions: int) -> dict[str, Any]:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self._settings.lease_name, "namespace": self._settings.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self._settings.lease_duration_seconds,
                "acquireTime": _micro_time(now),
                "renewTime": _micro_time(now),
                "leaseTransitions": transitions,
            },
        }
