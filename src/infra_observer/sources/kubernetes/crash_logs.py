"""A crashed flow run's last pod lines: which pod, which containers, in which order.

Read only after a proposal to `Crashed` was accepted, so one replica reads them once. A
bare pod's own logs; a Job's newest pod (the Job's pods carry its uid in a label). The
flow's container first (`lifecycle.log_containers`), each container's crashed run first
(`previous=true`: a restarted container's last run), up to N lines in all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

import httpx

from infra_observer.errors import SourceError
from infra_observer.kubernetes_api import (
    ApiStatusError,
    KubeClient,
    describe,
    get_json,
    object_path,
    pods_path,
    read_pod_log,
)
from infra_observer.observations import CrashLogReader
from infra_observer.sources.kubernetes.lifecycle import log_containers

JOB_UID_LABEL: Final = "batch.kubernetes.io/controller-uid"
"""The label the Job controller puts on each pod of a Job, with the Job's uid."""
_NO_PREVIOUS: Final = "previous terminated container"
"""What the apiserver's 400 says when a container has no previous run to read."""
_FAILURES: Final = (ApiStatusError, httpx.HTTPError, OSError, TimeoutError, ValueError)


class CrashLogs:
    """Readers of crashed pods' lines, on the source's client once it is connected."""

    def __init__(self) -> None:
        self.client: KubeClient | None = None

    def of_pod(self, namespace: str, name: str) -> CrashLogReader:
        path = object_path(group_version="v1", resource="pods", namespace=namespace, name=name)
        return lambda lines: self._read(namespace, lines, find=lambda c: _bare_pod(c, path))

    def of_job(self, namespace: str, job_uid: str) -> CrashLogReader:
        def find(client: KubeClient) -> Awaitable[Mapping[str, Any]]:
            return _newest_pod(client, namespace=namespace, job_uid=job_uid)

        return lambda lines: self._read(namespace, lines, find=find)

    async def _read(
        self,
        namespace: str,
        lines: int,
        *,
        find: Callable[[KubeClient], Awaitable[Mapping[str, Any]]],
    ) -> Sequence[str]:
        client = self.client
        if client is None:
            raise SourceError("the Kubernetes source is not connected")
        try:
            return await pod_lines(client, await find(client), lines=lines)
        except _FAILURES as exc:
            raise SourceError(
                f"cannot read the pod's logs in {namespace}: {describe(exc)}"
            ) from exc


async def _bare_pod(client: KubeClient, path: str) -> Mapping[str, Any]:
    pod = await get_json(client, path)
    if not isinstance(pod, Mapping):
        raise ValueError("the pod read is not an object")
    return pod


async def _newest_pod(client: KubeClient, *, namespace: str, job_uid: str) -> Mapping[str, Any]:
    answer = await get_json(
        client, pods_path(namespace), params={"labelSelector": f"{JOB_UID_LABEL}={job_uid}"}
    )
    items = answer.get("items") if isinstance(answer, Mapping) else None
    pods = [pod for pod in items or () if isinstance(pod, Mapping)]
    if not pods:
        raise SourceError(f"Job {job_uid} in {namespace} has no pod left to read logs from")
    return max(pods, key=_created)


def _created(pod: Mapping[str, Any]) -> tuple[str, str]:
    # RFC 3339 times in UTC sort as text; the name breaks a tie within the second.
    metadata = pod.get("metadata") or {}
    return str(metadata.get("creationTimestamp") or ""), str(metadata.get("name") or "")


async def pod_lines(client: KubeClient, pod: Mapping[str, Any], *, lines: int) -> list[str]:
    """Up to `lines` lines of the pod's containers in `log_containers` order."""
    metadata, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    namespace, name = str(metadata.get("namespace")), str(metadata.get("name"))
    read: list[str] = []
    for container in log_containers(spec if isinstance(spec, Mapping) else {}):
        left = lines - len(read)
        if left <= 0:
            break
        read.extend(
            await _container_lines(
                client, namespace=namespace, name=name, container=container, lines=left
            )
        )
    return read


async def _container_lines(
    client: KubeClient, *, namespace: str, name: str, container: str, lines: int
) -> list[str]:
    try:
        return await read_pod_log(
            client, namespace, name, container=container, previous=True, tail_lines=lines
        )
    except ApiStatusError as exc:
        if exc.status != 400 or _NO_PREVIOUS not in exc.message:
            raise
    return await read_pod_log(
        client, namespace, name, container=container, previous=False, tail_lines=lines
    )
