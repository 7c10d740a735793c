"""The authenticated HTTP client for the Prefect API: auth header, TLS, proxy, timeouts,
and one request path that maps a failure onto the error tree.

Requests go to httpcore's connection pool directly, through its public API, rather than
through an `httpx.AsyncClient`: every call here is to one known server with a body we
built, so httpx's per-request work (parsing and merging URLs, building its request and
response models, cookies, event hooks) buys nothing and costs a third or more of the CPU
of each request (docs/performance.md, "The lifecycle made cheaper"). What httpx would
still add is done here: the `Host`, `Content-Length` and auth headers, gzip and deflate
answers, and the proxy the environment names.
"""

from __future__ import annotations

import base64
import ssl
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit

from infra_observer import __version__
from infra_observer.config import PrefectSettings
from infra_observer.errors import ConfigError
from infra_observer.prefect_api.statuses import transport_failure

if TYPE_CHECKING:
    import httpcore

_DEFAULT_PORTS = {"http": 80, "https": 443}
_DECOMPRESS_WBITS = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer of the Prefect API, read whole."""

    method: str
    url: str
    status_code: int
    headers: Mapping[str, str]
    """Header names in lower case."""
    content: bytes
    """The body, decompressed."""

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class _Server:
    """`PREFECT_API_URL` split once into what every request reuses."""

    scheme: bytes
    host: bytes
    port: int | None
    path: str
    """The API's base path, percent-encoded, without a trailing slash."""
    authority: bytes
    """The `Host` header: the host, and the port when it is not the scheme's default."""

    @classmethod
    def parse(cls, api_url: str) -> _Server:
        parts = urlsplit(api_url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ConfigError(f"PREFECT_API_URL {api_url!r} is not an http(s) URL with a host")
        host = parts.hostname
        bracketed = f"[{host}]" if ":" in host else host
        port = parts.port
        shown_port = port if port not in (None, _DEFAULT_PORTS[parts.scheme]) else None
        authority = bracketed if shown_port is None else f"{bracketed}:{shown_port}"
        return cls(
            scheme=parts.scheme.encode(),
            host=host.encode("idna"),
            port=port,
            path=quote(unquote(parts.path.rstrip("/")), safe="/:@!$&'()*+,;=~"),
            authority=authority.encode("idna"),
        )


class PrefectApi:
    """One Prefect API (`PREFECT_API_URL`) and its connections, shared by every endpoint."""

    def __init__(
        self,
        *,
        pool: httpcore.AsyncConnectionPool,
        api_url: str,
        headers: Mapping[str, str],
        timeout_seconds: float,
    ) -> None:
        self._pool = pool
        self._server = _Server.parse(api_url)
        self._base = api_url.rstrip("/")
        self._headers = [(b"Host", self._server.authority)] + [
            (name.encode(), value.encode("latin-1")) for name, value in headers.items()
        ]
        self._failures = _transport_errors()
        seconds = timeout_seconds
        self._extensions = {
            "timeout": {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds}
        }

    @classmethod
    def from_settings(
        cls, prefect: PrefectSettings, *, timeout_seconds: float, ca_bundle: Path | None = None
    ) -> PrefectApi:
        """Raises `ConfigError` without `PREFECT_API_URL`, or with a proxy of a kind the
        client cannot use."""
        if prefect.api_url is None:
            raise ConfigError("the Prefect API needs PREFECT_API_URL")
        api_url = str(prefect.api_url)
        return cls(
            pool=_pool(api_url, ssl_context=_ssl_context(prefect, ca_bundle)),
            api_url=api_url,
            headers=_headers(prefect),
            timeout_seconds=timeout_seconds,
        )

    def url(self, path: str) -> str:
        """`path` (starting with `/`) under `PREFECT_API_URL`."""
        return self._base + path

    async def request(self, method: str, path: str, *, body: bytes | None = None) -> Answer:
        """Send a request (a JSON `body`, when given) and read its whole answer, whatever its
        status; a request that got no answer raises a `DeliveryError` subclass
        (`statuses.transport_failure`)."""
        import httpcore  # loaded with the pool

        server = self._server
        target = (server.path + path).encode()
        headers = self._headers + _body_headers(body)
        url = httpcore.URL(scheme=server.scheme, host=server.host, port=server.port, target=target)
        try:
            response = await self._pool.request(
                method, url, headers=headers, content=body, extensions=self._extensions
            )
        except self._failures as exc:
            raise transport_failure(exc, url=self._base + path, method=method) from exc
        return Answer(
            method=method,
            url=self._base + path,
            status_code=response.status,
            headers={
                name.decode().lower(): value.decode("latin-1") for name, value in response.headers
            },
            content=_decoded(response),
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def _body_headers(body: bytes | None) -> list[tuple[bytes, bytes]]:
    if body is None:
        return []
    return [(b"Content-Type", b"application/json"), (b"Content-Length", b"%d" % len(body))]


def _decoded(response: httpcore.Response) -> bytes:
    encoding = next(
        (
            value.strip().lower()
            for name, value in response.headers
            if name.lower() == b"content-encoding"
        ),
        b"identity",
    )
    wbits = _DECOMPRESS_WBITS.get(encoding)
    if wbits is None:
        return response.content
    try:
        return zlib.decompress(response.content, wbits)
    except zlib.error:
        # A server that says deflate may send a raw stream, without the zlib header.
        return zlib.decompress(response.content, -zlib.MAX_WBITS)


def _headers(prefect: PrefectSettings) -> dict[str, str]:
    headers = {
        "User-Agent": f"infra-observer/{__version__}",
        "Accept": "application/json",
        "Accept-Encoding": "gzip, deflate",
    }
    if prefect.api_key is not None:
        headers["Authorization"] = f"Bearer {prefect.api_key.get_secret_value()}"
    elif prefect.api_auth_string is not None:
        token = base64.b64encode(prefect.api_auth_string.get_secret_value().encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    return headers


def _ssl_context(prefect: PrefectSettings, ca_bundle: Path | None) -> ssl.SSLContext:
    if ca_bundle is not None:
        return ssl.create_default_context(cafile=str(ca_bundle))
    if prefect.api_url is not None and prefect.api_url.scheme == "http":
        # Plain HTTP never uses it (redirects are not followed), so the default CA bundle is
        # not loaded for nothing; with no CA at all, TLS could only fail.
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return ssl.create_default_context()


def _pool(api_url: str, *, ssl_context: ssl.SSLContext) -> httpcore.AsyncConnectionPool:
    """Connections on the event loop's own sockets (`transport.AsyncioBackend`), through
    the proxy the environment names for the API, if any."""
    # Imported here, not at the top: the stdout sink never needs them.
    import httpcore

    from infra_observer.transport import AsyncioBackend, environment_proxy

    proxy = environment_proxy(api_url)
    if proxy is None:
        return httpcore.AsyncConnectionPool(
            ssl_context=ssl_context, network_backend=AsyncioBackend()
        )
    parts = urlsplit(proxy)
    if parts.scheme not in _DEFAULT_PORTS:
        raise ConfigError(
            f"the proxy {parts.scheme}://{parts.hostname} named by the environment for "
            f"{api_url} is not an HTTP or HTTPS proxy; only those are supported"
        )
    auth = (unquote(parts.username), unquote(parts.password or "")) if parts.username else None
    return httpcore.AsyncHTTPProxy(
        proxy_url=parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl(),
        proxy_auth=auth,
        ssl_context=ssl_context,
        proxy_ssl_context=ssl.create_default_context() if parts.scheme == "https" else None,
        network_backend=AsyncioBackend(),
    )


def _transport_errors() -> tuple[type[Exception], ...]:
    import httpcore

    return (
        httpcore.TimeoutException,
        httpcore.NetworkError,
        httpcore.ProtocolError,
        httpcore.ProxyError,
        httpcore.UnsupportedProtocol,
    )
