"""The authenticated HTTP client for the Prefect API: auth header, TLS, proxy, timeouts,
and one request path that maps a failure onto the error tree."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from infra_observer import __version__
from infra_observer.config import PrefectSettings
from infra_observer.errors import ConfigError
from infra_observer.prefect_api.statuses import transport_failure

if TYPE_CHECKING:
    import httpx

_JSON = {"Content-Type": "application/json"}


def api_client(
    prefect: PrefectSettings, *, timeout_seconds: float, ca_bundle: Path | None = None
) -> httpx.AsyncClient:
    """An HTTP client with Prefect's auth conventions: `PREFECT_API_KEY` as a bearer token
    (Cloud), or `PREFECT_API_AUTH_STRING` as basic auth (self-hosted). Redirects are not
    followed: an API that redirects is a wrong `PREFECT_API_URL`."""
    # Imported here, not at the top: the stdout sink never needs httpx.
    import httpx

    from infra_observer.transport import asyncio_transport, environment_proxy

    transport = asyncio_transport(
        ssl_context=httpx.create_ssl_context(verify=_verify(prefect, ca_bundle)),
        limits=httpx.Limits(),
        proxy=environment_proxy(str(prefect.api_url)) if prefect.api_url else None,
    )
    return httpx.AsyncClient(
        transport=transport,
        headers=_headers(prefect),
        timeout=httpx.Timeout(timeout_seconds),
        follow_redirects=False,
    )


def _headers(prefect: PrefectSettings) -> dict[str, str]:
    headers = {"User-Agent": f"infra-observer/{__version__}"}
    if prefect.api_key is not None:
        headers["Authorization"] = f"Bearer {prefect.api_key.get_secret_value()}"
    elif prefect.api_auth_string is not None:
        token = base64.b64encode(prefect.api_auth_string.get_secret_value().encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    return headers


def _verify(prefect: PrefectSettings, ca_bundle: Path | None) -> ssl.SSLContext | bool:
    if ca_bundle is not None:
        return ssl.create_default_context(cafile=str(ca_bundle))
    if prefect.api_url is not None and prefect.api_url.scheme == "http":
        # Plain HTTP never uses it (redirects are not followed), so the default CA bundle is
        # not loaded for nothing; with no CA at all, TLS could only fail.
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return True


class PrefectApi:
    """One Prefect API (`PREFECT_API_URL`) and its client, shared by every endpoint."""

    def __init__(self, *, client: httpx.AsyncClient, api_url: str) -> None:
        self._client = client
        self._base = api_url.rstrip("/")

    @classmethod
    def from_settings(
        cls, prefect: PrefectSettings, *, timeout_seconds: float, ca_bundle: Path | None = None
    ) -> PrefectApi:
        """Raises `ConfigError` without `PREFECT_API_URL`."""
        if prefect.api_url is None:
            raise ConfigError("the Prefect API needs PREFECT_API_URL")
        client = api_client(prefect, timeout_seconds=timeout_seconds, ca_bundle=ca_bundle)
        return cls(client=client, api_url=str(prefect.api_url))

    @property
    def client(self) -> httpx.AsyncClient:
        return self._client

    def url(self, path: str) -> str:
        """`path` (starting with `/`) under `PREFECT_API_URL`."""
        return self._base + path

    async def request(self, method: str, path: str, *, body: bytes | None = None) -> httpx.Response:
        """Send a request (a JSON `body`, when given) and read its whole answer, whatever its
        status; a request that got no answer raises a `DeliveryError` subclass
        (`statuses.transport_failure`)."""
        import httpx  # loaded with the client

        url = self._base + path
        try:
            return await self._client.request(
                method, url, content=body, headers=_JSON if body is not None else None
            )
        except httpx.TransportError as exc:
            raise transport_failure(exc, url=url, method=method) from exc

    async def aclose(self) -> None:
        await self._client.aclose()
