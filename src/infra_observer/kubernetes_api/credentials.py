"""Kubernetes credentials: kubeconfig (contexts, exec plugins, OIDC) or in-cluster tokens.

They come from kubernetes_asyncio's own loaders, into a fresh `Configuration` that is never
installed as the library's global default. Only the configuration module and the one
loader in use are imported (`infra_observer.tuning.kubernetes_loaders`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from infra_observer.config import KubernetesSettings
from infra_observer.errors import ConfigError
from infra_observer.tuning.kubernetes_loaders import configuration_class, loader


def _default_kubeconfig() -> str:
    return os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


def _names_a_file(kubeconfig: Path) -> bool:
    # The loader skips missing files (a value may list several, `~` expanded) and then
    # reads an empty kubeconfig: "Expected key current-context" would hide the cause.
    listed = str(kubeconfig).split(os.pathsep)
    return any(os.path.isfile(os.path.expanduser(path)) for path in listed)


def _in_cluster(settings: KubernetesSettings) -> bool:
    return (
        settings.kubeconfig is None
        and settings.context is None
        and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    )


async def load_configuration(settings: KubernetesSettings) -> Any:
    """A fresh `Configuration`: the configured kubeconfig (and context); else in-cluster;
    else $KUBECONFIG (or ~/.kube/config), read now rather than when a library was imported.
    """
    in_cluster = _in_cluster(settings)
    module = loader("incluster_config" if in_cluster else "kube_config")
    if settings.kubeconfig is not None and not _names_a_file(settings.kubeconfig):
        raise ConfigError(
            f"INFRA_OBSERVER_KUBERNETES_KUBECONFIG={str(settings.kubeconfig)!r} is not a file; "
            "give the path of a kubeconfig, or unset it to use the pod's ServiceAccount or "
            "$KUBECONFIG"
        )
    configuration = configuration_class()()
    try:
        if in_cluster:
            module.load_incluster_config(client_configuration=configuration)
        else:
            path = settings.kubeconfig
            await module.load_kube_config(
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
