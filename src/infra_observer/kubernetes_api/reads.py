"""One-off reads of the Kubernetes API: an object or a filtered list as JSON, a pod's log.

For the rare moments a watch is not enough (a crashed pod's last lines); never on the path
of a watch's changes.
"""

from __future__ import annotations

from typing import Any, Final

import httpx
import orjson

from infra_observer.kubernetes_api.client import KubeClient, read_body
from infra_observer.kubernetes_api.paths import object_path
from infra_observer.kubernetes_api.status import status_error

READ_TIMEOUT_SECONDS: Final = 30.0
_LIMITS: Final = httpx.Timeout(READ_TIMEOUT_SECONDS)


async def get_json(client: KubeClient, path: str, *, params: dict[str, str] | None = None) -> Any:
    """The decoded answer of a GET; an error status raises `ApiStatusError` (or `GoneError`)."""
    return orjson.loads(await _get(client, path, params=params or {}, accept=None) or b"null")


async def read_pod_log(
    client: KubeClient,
    namespace: str,
    name: str,
    *,
    container: str,
    previous: bool,
    tail_lines: int,
) -> list[str]:
    """The last `tail_lines` lines of one container of a pod, oldest first.

    `previous`: the container's previous run (the one that crashed, when it was restarted).
    The apiserver answers 400 when there is no such run; that is the caller's to handle.
    """
    path = object_path(group_version="v1", resource="pods", namespace=namespace, name=name)
    params = {"container": container, "tailLines": str(tail_lines)}
    if previous:
        params["previous"] = "true"
    body = await _get(client, f"{path}/log", params=params, accept="text/plain, */*")
    return body.decode(errors="replace").splitlines()[-tail_lines:] if tail_lines > 0 else []


async def _get(
    client: KubeClient, path: str, *, params: dict[str, str], accept: str | None
) -> bytes:
    response = await client.request("GET", path, params=params, limits=_LIMITS, accept=accept)
    body = await read_body(response)
    # 204: a pod not scheduled yet has no log at all.
    if response.status_code not in (200, 204):
        raise status_error(response.status_code, response.reason_phrase, body)
    return body
