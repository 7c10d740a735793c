"""A private dockerd on a unix socket, with a busybox image imported from a cached tarball.

Helpers talk to the Engine API directly (httpx over the unix socket, API 1.41, which is
what Debian's dockerd 20.10 speaks), so no particular docker CLI version is needed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from ._util import (
    ManagedProcess,
    OneProcessPeer,
    PeerUnavailableError,
    provisioned,
    short_tempdir,
)

log = logging.getLogger(__name__)

API_VERSION = "v1.41"
IMAGE = "infra-observer-busybox:latest"


def oom_command(delay: float = 0.5) -> list[str]:
    """A command that exhausts any memory limit after ``delay`` seconds.

    ``tail`` keeps the last "line" of /dev/zero, which never ends. The delay gives the
    runtime time to arm its OOM notification: a process killed within milliseconds of
    starting can exit without dockerd ever setting ``State.OOMKilled``.
    """
    return ["sh", "-c", f"sleep {delay}; exec tail /dev/zero"]


class DockerPeer(OneProcessPeer):
    """dockerd with private data/exec roots under a short temp dir.

    Attributes: ``socket`` (Path), ``host`` (``unix://...`` for DOCKER_HOST), ``image``
    (the imported busybox image), ``api_version``.
    """

    # dockerd stops its running containers before it exits.
    stop_timeout = 30.0
    detached_children = True

    def __init__(self) -> None:
        self.dockerd_binary = provisioned("dockerd")
        self.rootfs_tarball = provisioned("busybox_rootfs")
        # Short on purpose: unix socket paths are limited to 107 bytes.
        super().__init__(short_tempdir("io-dkr-"))
        self.socket = self.state_dir / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.image = IMAGE
        self.api_version = API_VERSION

    def env(self) -> dict[str, str]:
        """Environment for a process (docker CLI, the daemon under test) using this dockerd."""
        return {"DOCKER_HOST": self.host, "DOCKER_API_VERSION": self.api_version.lstrip("v")}

    # ------------------------------------------------------------ lifecycle

    def start(self) -> DockerPeer:
        try:
            self._start_daemon()
            self._import_image()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_daemon(self) -> None:
        dockerd = ManagedProcess(
            "dockerd",
            [
                self.dockerd_binary,
                "-H",
                self.host,
                "--data-root",
                str(self.state_dir / "root"),
                "--exec-root",
                str(self.state_dir / "exec"),
                "--pidfile",
                str(self.state_dir / "docker.pid"),
                # Loopback-only tests: no host firewall rules, no bridge network.
                "--iptables=false",
                "--bridge=none",
                "--ip-masq=false",
                "--shutdown-timeout=5",
            ],
            log_path=self.state_dir / "dockerd.log",
        )
        self._launch(dockerd, ready=self._ping, timeout=60)

    def _ping(self) -> bool | None:
        # Probe the socket ourselves first: httpcore leaks the socket object when a
        # unix-socket connect fails, and filterwarnings=error turns that into a failure.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(2)
            probe.connect(str(self.socket))
        return True if self.request("GET", "/_ping", versioned=False).text == "OK" else None

    def _import_image(self) -> None:
        repo, tag = self.image.rsplit(":", 1)
        if self.request("GET", f"/images/{self.image}/json").status_code == 200:
            return
        with self.rootfs_tarball.open("rb") as tarball:
            response = self.request(
                "POST",
                "/images/create",
                params={"fromSrc": "-", "repo": repo, "tag": tag},
                content=tarball.read(),
                headers={"Content-Type": "application/x-tar"},
                timeout=120,
            )
        if response.status_code != 200 or '"error"' in response.text:
            raise PeerUnavailableError(f"docker import failed: {response.text[-500:]}")

    def restart(self) -> None:
        """Stop dockerd (it stops running containers) and start it again on the same socket."""
        self._stop_process()
        self._start_daemon()

    # ------------------------------------------------------------ raw API

    def _url(self, path: str, versioned: bool) -> str:
        return f"http://docker{'/' + self.api_version if versioned else ''}{path}"

    def request(
        self, method: str, path: str, *, versioned: bool = True, timeout: float = 30, **kwargs: Any
    ) -> httpx.Response:
        """A synchronous Engine API call (for setup code outside an event loop)."""
        transport = httpx.HTTPTransport(uds=str(self.socket))
        with httpx.Client(transport=transport, timeout=timeout) as client:
            return client.request(method, self._url(path, versioned), **kwargs)

    async def arequest(
        self,
        method: str,
        path: str,
        *,
        versioned: bool = True,
        timeout: float = 30,  # noqa: ASYNC109 - passed on as httpx's request timeout
        **kwargs: Any,
    ) -> httpx.Response:
        """An Engine API call; a new client each time so no state is bound to one event loop."""
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket))
        async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
            return await client.request(method, self._url(path, versioned), **kwargs)

    async def _ok(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.arequest(method, path, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
        return response

    # ------------------------------------------------------------ container helpers

    async def create_container(
        self,
        command: Sequence[str],
        *,
        labels: Mapping[str, str] | None = None,
        name: str | None = None,
        memory: int | None = None,
        restart_policy: str | None = None,
        max_retries: int = 0,
        env: Mapping[str, str] | None = None,
        stop_signal: str | None = None,
        stop_timeout: int | None = 1,
    ) -> str:
        """Create (not start) a busybox container; returns its id.

        ``memory`` (bytes) also caps swap at the same value, so exceeding it OOM-kills.
        ``stop_timeout`` is the SIGTERM-to-SIGKILL grace when stopped without one, also at
        daemon shutdown: 1 s (not Docker's 10 s) keeps ``restart()`` quick, since busybox
        ``sleep`` as PID 1 ignores SIGTERM.
        """
        host_config: dict[str, Any] = {"NetworkMode": "none"}
        if memory is not None:
            host_config["Memory"] = memory
            host_config["MemorySwap"] = memory
        if restart_policy:
            host_config["RestartPolicy"] = {
                "Name": restart_policy,
                "MaximumRetryCount": max_retries,
            }
        body: dict[str, Any] = {
            "Image": self.image,
            "Cmd": list(command),
            "Labels": dict(labels or {}),
            "Env": [f"{k}={v}" for k, v in (env or {}).items()],
            "HostConfig": host_config,
        }
        if stop_signal:
            body["StopSignal"] = stop_signal
        if stop_timeout is not None:
            body["StopTimeout"] = stop_timeout
        params = {"name": name} if name else None
        response = await self._ok("POST", "/containers/create", json=body, params=params)
        container_id: str = response.json()["Id"]
        return container_id

    async def run_container(self, command: Sequence[str], **kwargs: Any) -> str:
        """Create and start a container (see ``create_container`` for the options); returns id."""
        container_id = await self.create_container(command, **kwargs)
        await self.start_container(container_id)
        return container_id

    async def start_container(self, container_id: str) -> None:
        await self._ok("POST", f"/containers/{container_id}/start")

    async def inspect(self, container_id: str) -> dict[str, Any]:
        response = await self._ok("GET", f"/containers/{container_id}/json")
        data: dict[str, Any] = response.json()
        return data

    async def wait_exit(
        self,
        container_id: str,
        timeout: float = 30,  # noqa: ASYNC109 - passed on as httpx's request timeout
    ) -> int:
        """Wait until the container stops; returns its exit code."""
        response = await self._ok(
            "POST",
            f"/containers/{container_id}/wait",
            params={"condition": "not-running"},
            timeout=timeout,
        )
        code: int = response.json()["StatusCode"]
        return code

    async def wait_oom_killed(
        self,
        container_id: str,
        timeout: float = 10,  # noqa: ASYNC109 - a bounded poll, the bound is the point
    ) -> dict[str, Any]:
        """Wait for ``State.OOMKilled``: dockerd may record the exit before the OOM event."""
        deadline = time.monotonic() + timeout
        while True:
            info = await self.inspect(container_id)
            if info["State"]["OOMKilled"]:
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"{container_id[:12]} not OOMKilled: {info['State']}")
            await asyncio.sleep(0.1)

    async def wait_status(
        self,
        container_id: str,
        status: str,
        timeout: float = 15,  # noqa: ASYNC109 - a bounded poll, the bound is the point
    ) -> dict[str, Any]:
        """Poll until ``State.Status`` equals ``status``; returns the inspect document."""
        deadline = time.monotonic() + timeout
        while True:
            info = await self.inspect(container_id)
            if info["State"]["Status"] == status:
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{container_id[:12]} is {info['State']['Status']}, not {status}"
                )
            await asyncio.sleep(0.1)

    async def pause(self, container_id: str) -> None:
        await self._ok("POST", f"/containers/{container_id}/pause")

    async def unpause(self, container_id: str) -> None:
        await self._ok("POST", f"/containers/{container_id}/unpause")

    async def kill(self, container_id: str, signal: str = "SIGKILL") -> None:
        await self._ok("POST", f"/containers/{container_id}/kill", params={"signal": signal})

    async def stop_container(self, container_id: str, grace: int = 1) -> None:
        await self._ok(
            "POST", f"/containers/{container_id}/stop", params={"t": grace}, timeout=grace + 30
        )

    async def restart_container(self, container_id: str, grace: int = 1) -> None:
        await self._ok(
            "POST",
            f"/containers/{container_id}/restart",
            params={"t": grace},
            timeout=grace + 30,
        )

    async def remove(self, container_id: str, *, force: bool = True) -> None:
        response = await self.arequest(
            "DELETE", f"/containers/{container_id}", params={"force": str(force).lower()}
        )
        if response.status_code not in (204, 404):
            raise RuntimeError(f"remove {container_id}: {response.status_code} {response.text}")

    async def list_containers(
        self, *, label: str | None = None, all_states: bool = True
    ) -> list[dict[str, Any]]:
        params: dict[str, str] = {"all": str(all_states).lower()}
        if label:
            params["filters"] = json.dumps({"label": [label]})
        response = await self._ok("GET", "/containers/json", params=params)
        data: list[dict[str, Any]] = response.json()
        return data

    async def remove_labelled(self, label: str) -> None:
        """Remove every container carrying ``label`` (``key`` or ``key=value``)."""
        for container in await self.list_containers(label=label):
            await self.remove(container["Id"])
