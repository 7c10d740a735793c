"""The Kubernetes API's HTTP client: plain httpx with the loaded credentials, raw responses out.

Requests do not go through kubernetes_asyncio's generated `ApiClient`: its generated API and
model modules cost far more memory than the few requests here need, whose answers are read
as raw JSON anyway. They go through httpx, the HTTP client the events API already uses: one
HTTP stack in the process instead of two (the library's own client uses aiohttp), on the
event loop's own sockets and TLS (see `infra_observer.transport`). What each costs is in
docs/performance.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import structlog

from infra_observer import __version__
from infra_observer.config import KubernetesSettings
from infra_observer.errors import ConfigError
from infra_observer.kubernetes_api.credentials import load_configuration
from infra_observer.transport import asyncio_transport, environment_proxy

log = structlog.get_logger(__name__)


def _ssl_context(configuration: Any) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if configuration.cert_file:
            context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
    except (OSError, ssl.SSLError) as exc:  # a file missing, or a key that does not match
        raise ConfigError(
            f"cannot use the Kubernetes TLS files (CA {configuration.ssl_ca_cert!r}, client "
            f"certificate {configuration.cert_file!r}, key {configuration.key_file!r}): {exc}; "
            "check certificate-authority, client-certificate and client-key in the kubeconfig"
        ) from exc
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _connection_material(configuration: Any) -> tuple[object, ...]:
    """What the HTTP client is built from, with digests of its TLS files' contents (a
    renewed certificate usually keeps its path; the key itself is not kept)."""
    files = (configuration.ssl_ca_cert, configuration.cert_file, configuration.key_file)
    try:
        contents = tuple(
            hashlib.sha256(Path(name).read_bytes()).digest() if name else None for name in files
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot read a Kubernetes TLS file ({exc}); check certificate-authority, "
            "client-certificate and client-key in the kubeconfig"
        ) from exc
    return (
        configuration.host,
        configuration.proxy,
        configuration.tls_server_name,
        configuration.verify_ssl,
        contents,
    )


def _http_client(configuration: Any, *, host: str) -> httpx.AsyncClient:
    ssl_context = _ssl_context(configuration)
    # One long-lived watch per scope: no pool limit to queue them behind.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    # The kubeconfig's proxy-url, else HTTPS_PROXY / NO_PROXY, as kubectl honours them.
    proxy = configuration.proxy or environment_proxy(host)
    return httpx.AsyncClient(
        transport=asyncio_transport(ssl_context=ssl_context, limits=limits, proxy=proxy),
        headers={"Accept": "application/json", "User-Agent": f"infra-observer/{__version__}"},
        follow_redirects=False,
    )


class KubeClient:
    """Requests to the apiserver with the loaded credentials; raw responses out."""

    def __init__(self, *, settings: KubernetesSettings, configuration: Any) -> None:
        self._settings = settings
        self._use(configuration, material=_connection_material(configuration))
        self._reloading = asyncio.Lock()

    def _use(self, configuration: Any, *, material: tuple[object, ...]) -> None:
        """Take `configuration`, and an HTTP client (TLS context, connection pool) built
        from it; raises `ConfigError` and changes nothing when its TLS files are unusable."""
        host = str(configuration.host).rstrip("/")
        self._client = _http_client(configuration, host=host)
        self._configuration = configuration
        self._material = material
        self.host = host
        server_name = configuration.tls_server_name
        self._extensions = {"sni_hostname": server_name} if server_name else {}

    @classmethod
    async def connect(cls, settings: KubernetesSettings) -> KubeClient:
        return cls(settings=settings, configuration=await load_configuration(settings))

    async def reload_credentials(self) -> None:
        """Load the credentials again (an exec plugin's token expired, a token file rotated,
        a client certificate was renewed).

        Changed TLS files (client certificate, key, CA) get a new TLS context and connection
        pool: a connection made with the old certificate goes on authenticating as it. The
        old pool is closed, so requests still on it (other scopes' watches) end with a
        connection error and are made again, on new connections. One reload at a time: the
        watches of all scopes may ask at once after the same refusal.
        """
        async with self._reloading:
            configuration = await load_configuration(self._settings)
            material = _connection_material(configuration)
            if material == self._material:
                self._configuration = configuration
                return
            previous = self._client
            self._use(configuration, material=material)
            log.info("kubernetes_connection_renewed", host=self.host)
            await previous.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        limits: httpx.Timeout,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        accept: str | None = None,
    ) -> httpx.Response:
        """The response with its body still unread: the caller reads it, then closes it.

        `accept` replaces the JSON default (a pod's log is plain text).
        """
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if accept is not None:
            headers["Accept"] = accept
        # Runs the loaders' refresh hook: in-cluster tokens are re-read from their file.
        authorization = await self._configuration.get_api_key_with_prefix("BearerToken")
        if authorization:
            headers["Authorization"] = authorization
        request = self._client.build_request(
            method,
            self.host + path,
            params=params,
            content=body,
            headers=headers,
            timeout=limits,
            extensions=self._extensions,
        )
        return await self._client.send(request, stream=True)

    async def aclose(self) -> None:
        await self._client.aclose()


async def read_body(response: httpx.Response) -> bytes:
    """A response's whole body, the response then closed.

    Not `Response.aread`, which keeps the body on the response: httpx ties a response to
    its stream in a reference cycle, so the body (a page of pods: up to a few MB) would stay
    alive until the garbage collector's next pass.
    """
    try:
        return b"".join([chunk async for chunk in response.aiter_bytes()])
    finally:
        await response.aclose()
