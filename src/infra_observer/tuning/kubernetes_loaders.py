"""kubernetes_asyncio's credential loaders imported without its generated API client.

The package `__init__`s of kubernetes_asyncio import every generated API and model module,
and that of `kubernetes_asyncio.config` both loaders (the kubeconfig one brings yaml, exec
plugins and OIDC). The daemon needs only the configuration module and the one loader in
use; what the rest costs in resident memory and import time is in docs/performance.md
("Speed tricks: what each one pays").

Internals relied on:

- CPython's import system: a module object placed in `sys.modules` under a package's name
  (with a `__path__`) is taken as that package, and its submodules are found on that path
  without the package's `__init__` running.
- kubernetes_asyncio's layout: `client/configuration.py` imports nothing of the generated
  client; the loaders `config/kube_config.py` and `config/incluster_config.py` need only
  `client.Configuration` (and `client.ApiClient` in helpers never called here) from the
  client package, and `kube_config` imports `OpenIDRequestor` from `config/openid.py`
  (which imports aiohttp) at its top; the configuration module imports urllib3 at its top
  and uses it only for the generated client's basic auth.

Should one of these change, `tests/unit/test_kubernetes_client.py::
test_loading_credentials_does_not_import_the_generated_api` and
`::test_each_loader_loads_without_the_generated_api` fail: they load credentials with
each loader in a fresh interpreter, check that no generated module (nor aiohttp) was
imported, and that an ordinary `import kubernetes_asyncio` afterwards works in full.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from typing import Any

from infra_observer.errors import ConfigError

_PACKAGE = "kubernetes_asyncio"
_CLIENT_PACKAGE = "kubernetes_asyncio.client"
_CONFIG_PACKAGE = "kubernetes_asyncio.config"
# Imported at the top of the configuration module, used only by the generated client's
# basic auth, which the daemon never uses.
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


def configuration_class() -> Any:
    """`kubernetes_asyncio.client.Configuration`, once `loader` has loaded its module (the
    module stays imported when the stand-in packages are gone)."""
    return importlib.import_module(f"{_CLIENT_PACKAGE}.configuration").Configuration


def loader(name: str) -> Any:
    """`kubernetes_asyncio.config.<name>`, importing as little of the library as possible.

    When nothing imported the library yet, stand-in package objects make only the
    configuration module and the one loader load; the stand-ins are removed again, so a
    later ordinary `import kubernetes_asyncio` runs the real `__init__`s, which reuse the
    modules already loaded. The OIDC helper is loaded the same way when a kubeconfig user
    with an OIDC auth provider first needs a token refreshed.
    """
    module = f"{_CONFIG_PACKAGE}.{name}"
    if _PACKAGE in sys.modules:
        return importlib.import_module(module)
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("kubernetes_asyncio is not installed")
    roots = list(spec.submodule_search_locations)
    stand_ins = _stand_ins(roots, loading=name)
    sys.modules.update(stand_ins)
    try:
        client = stand_ins[_CLIENT_PACKAGE]
        configuration = importlib.import_module(f"{_CLIENT_PACKAGE}.configuration")
        client.Configuration = configuration.Configuration  # type: ignore[attr-defined]
        client.ApiClient = _api_client  # type: ignore[attr-defined]
        return importlib.import_module(module)
    finally:
        for stand_in_name, stand_in in stand_ins.items():
            if sys.modules.get(stand_in_name) is stand_in:
                del sys.modules[stand_in_name]


def _stand_ins(roots: list[str], *, loading: str) -> dict[str, types.ModuleType]:
    """The package objects (and deferred modules) put in `sys.modules` while loading."""
    stand_ins = {
        _PACKAGE: _package(_PACKAGE, roots),
        _CLIENT_PACKAGE: _package(_CLIENT_PACKAGE, [os.path.join(r, "client") for r in roots]),
        _CONFIG_PACKAGE: _package(_CONFIG_PACKAGE, [os.path.join(r, "config") for r in roots]),
    }
    stand_ins.update({lazy: _Deferred(lazy) for lazy in _DEFERRED if lazy not in sys.modules})
    openid = f"{_CONFIG_PACKAGE}.{_OPENID}"
    if loading != _OPENID and openid not in sys.modules:
        stand_ins[openid] = _package(openid, [])
        stand_ins[openid].OpenIDRequestor = _open_id_requestor  # type: ignore[attr-defined]
    return stand_ins


def _open_id_requestor(*args: Any, **kwargs: Any) -> Any:
    """The real OpenIDRequestor, for the kubeconfig loader's OIDC token refresh."""
    return loader(_OPENID).OpenIDRequestor(*args, **kwargs)


def _api_client(*args: Any, **kwargs: Any) -> Any:
    """The real ApiClient, for the library's `new_client_from_config` helpers (unused here)."""
    from kubernetes_asyncio.client.api_client import ApiClient

    return ApiClient(*args, **kwargs)
