"""The HTTP side of the pod watcher: kubernetes_asyncio's credential loaders, plain httpx.

Credentials (kubeconfig with contexts, exec plugins and OIDC, or in-cluster ServiceAccount
tokens that rotate) come from kubernetes_asyncio's own loaders, into a fresh
`Configuration` that is never installed as the library's global default.

Requests do not go through its generated `ApiClient`: importing `kubernetes_asyncio.client`
loads about 1,500 generated API and model modules, measured at 35 MB of resident memory
(the whole daemon otherwise idles at about 50 MiB), for two GET requests whose answers
are read as raw JSON anyway. So only the configuration module and the one loader in use
are imported.

The requests themselves go through httpx, the HTTP client the events API already uses:
one HTTP stack in the process instead of two (aiohttp, which the library's own client
uses, costs about 9 MiB resident once imported; see docs/performance.md), on the event
loop's own sockets and TLS (see `infra_observer.transport`).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import os
import ssl
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from infra_observer import __version__
from infra_observer.config import KubernetesSettings
from infra_observer.errors import ConfigError
from infra_observer.transport import asyncio_transport, environment_proxy

log = structlog.get_logger(__name__)

_PACKAGE = "kubernetes_asyncio"
_CLIENT_PACKAGE = "kubernetes_asyncio.client"
_CONFIG_PACKAGE = "kubernetes_asyncio.config"
# Imported at the top of the configuration module, used only by the generated client's
# basic auth: about 1 MiB resident that the daemon would never use.
_DEFERRED = ("urllib3",)
# Imported by the kubeconfig loader for OIDC token refreshes only; it imports aiohttp.
_OPENID = "openid"


class _Deferred(types.ModuleType):
    """Stands in for a module that is imported on first attribute access."""

    def __getattr__(self, attribute: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            raise AttributeError(attribute)  # an import now would return the stand-in itself
        return getattr(importlib.import_module(self.__name__), attribute)


def _package(name: str, path: list[str]) -> types.ModuleType:
    package = types.ModuleType(name)
    package.__path__ = path
    return package


def _loader(loader: str) -> Any:
    """`kubernetes_asyncio.config.<loader>`, importing as little of the library as possible.

    Its package `__init__`s import every generated module, and that of `config` both
    loaders (the kubeconfig one brings yaml, exec plugins and OIDC). When nothing imported
    them yet, stand-in package objects make only the configuration module and the one
    loader load; the stand-ins are removed again, so a later ordinary `import
    kubernetes_asyncio` runs the real `__init__`s, which reuse the modules already loaded.
    The OIDC helper, which imports aiohttp, is loaded the same way when a kubeconfig user
    with an OIDC auth provider first needs a token refreshed.
    """
    module = f"{_CONFIG_PACKAGE}.{loader}"
    if _PACKAGE in sys.modules:
        return importlib.import_module(module)
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("kubernetes_asyncio is not installed")
    roots = list(spec.submodule_search_locations)
    client = _package(_CLIENT_PACKAGE, [os.path.join(root, "client") for root in roots])
    stand_ins = {
        _PACKAGE: _package(_PACKAGE, roots),
        _CLIENT_PACKAGE: client,
        _CONFIG_PACKAGE: _package(
            _CONFIG_PACKAGE, [os.path.join(root, "config") for root in roots]
        ),
    }
    stand_ins.update({lazy: _Deferred(lazy) for lazy in _DEFERRED if lazy not in sys.modules})
    openid = f"{_CONFIG_PACKAGE}.{_OPENID}"
    if loader != _OPENID and openid not in sys.modules:
        stand_ins[openid] = _package(openid, [])
        stand_ins[openid].OpenIDRequestor = _open_id_requestor  # type: ignore[attr-defined]
    sys.modules.update(stand_ins)
    try:
        configuration = importlib.import_module(f"{_CLIENT_PACKAGE}.configuration")
        client.Configuration = configuration.Configuration  # type: ignore[attr-defined]
        client.ApiClient = _api_client  # type: ignore[attr-defined]
        return importlib.import_module(module)
    finally:
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]


def _open_id_requestor(*args: Any, **kwargs: Any) -> Any:
    """The real OpenIDRequestor, for the kubeconfig loader's OIDC token refresh."""
    return _loader(_OPENID).OpenIDRequestor(*args, **kwargs)


def _api_client(*args: Any, **kwargs: Any) -> Any:
    """The real ApiClient, for the library's `new_client_from_config` helpers (unused here)."""
    from kubernetes_asyncio.client.api_client import ApiClient

    return ApiClient(*args, **kwargs)


def _default_kubeconfig() -> str:
    return os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


def _names_a_file(kubeconfig: Path) -> bool:
    # The loader skips missing files (a value may list several, `~` expanded) and then
    # reads an empty kubeconfig: "Expected key current-context" would hide the cause.
    listed = str(kubeconfig).split(os.pathsep)
    return any(os.path.isfile(os.path.expanduser(path)) for path in listed)


async def load_configuration(settings: KubernetesSettings) -> Any:
    """A fresh `Configuration`: the configured kubeconfig (and context); else in-cluster;
    else $KUBECONFIG (or ~/.kube/config), read now rather than when a library was imported.
    """
    in_cluster = (
        settings.kubeconfig is None
        and settings.context is None
        and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    )
    loader = _loader("incluster_config" if in_cluster else "kube_config")
    if settings.kubeconfig is not None and not _names_a_file(settings.kubeconfig):
        raise ConfigError(
            f"INFRA_OBSERVER_KUBERNETES_KUBECONFIG={str(settings.kubeconfig)!r} is not a file; "
            "give the path of a kubeconfig, or unset it to use the pod's ServiceAccount or "
            "$KUBECONFIG"
        )
    configuration = importlib.import_module(f"{_CLIENT_PACKAGE}.configuration").Configuration()
    try:
        if in_cluster:
            loader.load_incluster_config(client_configuration=configuration)
        else:
            path = settings.kubeconfig
            await loader.load_kube_config(
                config_file=str(path) if path is not None else _default_kubeconfig(),
                context=settings.context,
                client_configuration=configuration,
                persist_config=False,  # never write to the user's kubeconfig
            )
    except Exception as exc:  # the loaders raise anything from yaml errors to KeyError
        raise ConfigError(
            f"cannot load Kubernetes credentials ({type(exc).__name__}: {exc}); set "
            "INFRA_OBSERVER_KUBERNETES_KUBECONFIG (and _CONTEXT), run in a pod with a "
            "ServiceAccount, or set KUBECONFIG"
        ) from exc
    return configuration


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
    ) -> httpx.Response:
        """The response with its body still unread: the caller reads it, then closes it."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
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


def pods_path(namespace: str | None) -> str:
    if namespace is None:
        return "/api/v1/pods"
    return f"/api/v1/namespaces/{quote(namespace, safe='')}/pods"
