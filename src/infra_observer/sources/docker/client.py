"""A small Docker Engine API client on httpx: the few calls the container watcher makes.

Where the daemon is comes from `endpoint.py`. The API version is negotiated with
`GET /version`: the daemon's own version, never above `MAX_API_VERSION` (the newest this
client was checked against) and never above what the daemon speaks.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import httpx

from infra_observer.errors import SourceError
from infra_observer.sources.docker.endpoint import Endpoint, ssl_context
from infra_observer.sources.docker.logstream import LogTail
from infra_observer.transport import asyncio_transport

MAX_API_VERSION = "1.47"
# Every call used here exists unchanged since API 1.24 (Docker 1.12).
MIN_API_VERSION = "1.24"
REQUEST_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0


class DockerUnavailableError(SourceError):
    """The daemon could not be reached, or the connection broke."""


class DockerApiError(SourceError):
    """The daemon answered with an unexpected status."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class ContainerGoneError(DockerApiError):
    """The container was removed: what it held (its logs) is gone."""

    def __init__(self, container_id: str) -> None:
        super().__init__(
            f"container {container_id[:12]} is already removed: its logs went with it",
            status=404,
        )


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)


def negotiate_version(daemon: Mapping[str, Any]) -> str:
    """The API version to speak, from `GET /version`'s answer (pure)."""
    offered = str(daemon.get("ApiVersion") or "")
    if not offered:
        raise DockerApiError("the daemon's /version names no ApiVersion", status=200)
    chosen = min(offered, MAX_API_VERSION, key=_version_tuple)
    oldest = str(daemon.get("MinAPIVersion") or MIN_API_VERSION)
    if _version_tuple(chosen) < _version_tuple(MIN_API_VERSION) or _version_tuple(
        chosen
    ) < _version_tuple(oldest):
        raise DockerApiError(
            f"the daemon speaks Engine API {oldest}..{offered}, this client "
            f"{MIN_API_VERSION}..{MAX_API_VERSION}: upgrade or downgrade Docker",
            status=200,
        )
    return chosen


class DockerClient:
    """The calls the watcher makes; every httpx error comes out as one of ours."""

    def __init__(
        self,
        *,
        endpoint: Endpoint,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.api_version: str | None = None
        if transport is None:
            transport = asyncio_transport(
                ssl_context=ssl_context(endpoint.tls),
                limits=httpx.Limits(),
                uds=endpoint.socket_path,
            )
        self._http = httpx.AsyncClient(
            base_url=endpoint.base_url,
            transport=transport,
            timeout=httpx.Timeout(REQUEST_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS),
        )

    async def __aenter__(self) -> DockerClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- calls ----------------------------------------------------------------------------

    async def describe(self) -> str:
        """Ping the daemon and say what answered: its version, API version, host name."""
        try:
            await self.ping()
            version = await self.version()
            info = await self.info()
        except DockerApiError as exc:
            raise SourceError(
                f"the Docker daemon at {self.endpoint.host} answered: {exc}; check that "
                "INFRA_OBSERVER_DOCKER_HOST (or DOCKER_HOST) points at a Docker Engine"
            ) from exc
        return (
            f"Docker {version.get('Version', '?')} (API {self.api_version}) at "
            f"{self.endpoint.host}, host {info.get('Name', '?')}"
        )

    async def ping(self) -> None:
        await self._get("/_ping", versioned=False)

    async def version(self) -> dict[str, Any]:
        """`GET /version` (unversioned), and settle the API version to speak."""
        data = _object(await self._get("/version", versioned=False), "/version")
        self.api_version = negotiate_version(data)
        return data

    async def info(self) -> dict[str, Any]:
        return _object(await self._get("/info"), "/info")

    async def list_containers(self, *, labels: Sequence[str]) -> list[dict[str, Any]]:
        """All containers (any state) carrying every label filter (`key` or `key=value`)."""
        params = {"all": "true", "filters": json.dumps({"label": list(labels)})}
        data = (await self._get("/containers/json", params=params)).json()
        if not isinstance(data, list):
            raise DockerApiError("/containers/json did not answer a list", status=200)
        return [item for item in data if isinstance(item, dict)]

    async def inspect(self, container_id: str) -> dict[str, Any] | None:
        """The container's details, or None once it is removed (404)."""
        response = await self._request("GET", f"/containers/{container_id}/json", allow={404})
        if response.status_code == 404:
            return None
        return _object(response, "/containers/{id}/json")

    async def logs(self, container_id: str, *, tail: int, tty: bool) -> list[str]:
        """The container's last `tail` lines of stdout and stderr, oldest first.

        `tty`: the container has a TTY, so its logs are one raw stream, not frames. A
        container already removed raises `ContainerGoneError`: its logs went with it.
        """
        path = "/containers/{id}/logs"
        params = {"stdout": "1", "stderr": "1", "tail": str(tail)}
        request = self._http.build_request(
            "GET", self._path(f"/containers/{container_id}/logs", versioned=True), params=params
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc, path) from exc
        try:
            if response.status_code != 200:
                await response.aread()
                if response.status_code == 404:
                    raise ContainerGoneError(container_id)
                raise _status_error(response, path)
            lines = LogTail(lines=tail, framed=not tty)
            async for chunk in response.aiter_bytes():
                lines.feed(chunk)
            return lines.finish()
        except httpx.HTTPError as exc:
            raise self._unavailable(exc, path) from exc
        finally:
            await response.aclose()

    @asynccontextmanager
    async def events(
        self, *, labels: Sequence[str], since: int | None = None
    ) -> AsyncIterator[AsyncIterator[str]]:
        """Open `GET /events` for containers with every label; yields its lines as they come.

        Entering returns once the daemon answered the request: events from then on reach
        the iterator. Iterating ends when the daemon closes the stream.
        """
        filters = {"type": ["container"], "label": list(labels)}
        params = {"filters": json.dumps(filters)}
        if since is not None:
            params["since"] = f"{since // 1_000_000_000}.{since % 1_000_000_000:09d}"
        request = self._http.build_request(
            "GET",
            self._path("/events", versioned=True),
            params=params,
            # The stream is silent while nothing happens: no read timeout.
            timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT_SECONDS),
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc, "/events") from exc
        try:
            if response.status_code != 200:
                await response.aread()
                raise _status_error(response, "/events")
            yield self._lines(response)
        finally:
            await response.aclose()

    async def _lines(self, response: httpx.Response) -> AsyncIterator[str]:
        try:
            async for line in response.aiter_lines():
                if line.strip():
                    yield line
        except httpx.HTTPError as exc:
            raise self._unavailable(exc, "/events") from exc

    # --- plumbing -------------------------------------------------------------------------

    def _path(self, path: str, *, versioned: bool) -> str:
        if not versioned:
            return path
        if self.api_version is None:
            raise RuntimeError("call version() first: the API version is not negotiated")
        return f"/v{self.api_version}{path}"

    async def _get(
        self, path: str, *, versioned: bool = True, params: Mapping[str, str] | None = None
    ) -> httpx.Response:
        return await self._request("GET", path, versioned=versioned, params=params)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        versioned: bool = True,
        params: Mapping[str, str] | None = None,
        allow: frozenset[int] | set[int] = frozenset(),
    ) -> httpx.Response:
        try:
            response = await self._http.request(
                method, self._path(path, versioned=versioned), params=params
            )
        except httpx.HTTPError as exc:
            raise self._unavailable(exc, path) from exc
        if response.status_code >= 400 and response.status_code not in allow:
            raise _status_error(response, path)
        return response

    def _unavailable(self, exc: httpx.HTTPError, path: str) -> DockerUnavailableError:
        return DockerUnavailableError(
            f"cannot reach the Docker daemon at {self.endpoint.host} ({path}: "
            f"{type(exc).__name__}: {exc or 'connection closed'}); is dockerd running, and "
            "is INFRA_OBSERVER_DOCKER_HOST (or DOCKER_HOST) right and its socket readable "
            "by this user?"
        )


def _status_error(response: httpx.Response, path: str) -> DockerApiError:
    try:
        message = response.json().get("message", "")
    except (ValueError, AttributeError):
        message = response.text[:200]
    return DockerApiError(
        f"the Docker daemon answered {response.status_code} to {path}: {message}",
        status=response.status_code,
    )


def _object(response: httpx.Response, path: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError as exc:
        raise DockerApiError(f"{path} did not answer JSON", status=response.status_code) from exc
    if not isinstance(data, dict):
        raise DockerApiError(f"{path} did not answer an object", status=response.status_code)
    return data
