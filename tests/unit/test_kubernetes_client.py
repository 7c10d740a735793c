"""Credential loading for the Kubernetes API, and the lean import of kubernetes_asyncio's
loaders (`infra_observer.tuning.kubernetes_loaders`)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from infra_observer.config import KubernetesSettings
from infra_observer.errors import ConfigError
from infra_observer.kubernetes_api import load_configuration


def kubeconfig(path: Path, *contexts: tuple[str, str, str]) -> Path:
    """A kubeconfig with one cluster+token user per (context, server, token)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server}} for name, server, _ in contexts],
        "users": [{"name": name, "user": {"token": token}} for name, _, token in contexts],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": name}} for name, _, _ in contexts
        ],
        "current-context": contexts[0][0],
    }
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def two_contexts(tmp_path: Path) -> Path:
    return kubeconfig(
        tmp_path / "kubeconfig",
        ("first", "https://first.example:6443", "token-1"),
        ("second", "https://second.example:6443", "token-2"),
    )


async def test_explicit_kubeconfig_and_context(two_contexts: Path) -> None:
    configuration = await load_configuration(
        KubernetesSettings(kubeconfig=two_contexts, context="second")
    )
    assert configuration.host == "https://second.example:6443"
    assert await configuration.get_api_key_with_prefix("BearerToken") == "Bearer token-2"


async def test_kubeconfig_variable_read_at_load_time(
    two_contexts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(two_contexts))
    configuration = await load_configuration(KubernetesSettings())
    assert configuration.host == "https://first.example:6443"


async def test_in_cluster_config_comes_before_kubeconfig_variable(
    two_contexts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes_asyncio.config import incluster_config

    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("sa-token")
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    monkeypatch.setenv("KUBECONFIG", str(two_contexts))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    configuration = await load_configuration(KubernetesSettings())
    assert configuration.host == "https://10.0.0.1:443"
    assert configuration.ssl_ca_cert == str(ca)
    assert await configuration.get_api_key_with_prefix("BearerToken") == "Bearer sa-token"


async def test_a_context_means_the_kubeconfig_even_in_a_pod(
    two_contexts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(two_contexts))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    configuration = await load_configuration(KubernetesSettings(context="second"))
    assert configuration.host == "https://second.example:6443"


async def test_missing_credentials_say_how_to_provide_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="INFRA_OBSERVER_KUBERNETES_KUBECONFIG"):
        await load_configuration(KubernetesSettings())


async def test_unknown_context_is_a_config_error(two_contexts: Path) -> None:
    with pytest.raises(ConfigError, match="third"):
        await load_configuration(KubernetesSettings(kubeconfig=two_contexts, context="third"))


def test_loading_credentials_does_not_import_the_generated_api(two_contexts: Path) -> None:
    """In a fresh interpreter: credentials load without the ~1,500 generated modules or
    aiohttp, and an ordinary import of kubernetes_asyncio afterwards still works in full."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from infra_observer.config import KubernetesSettings
        from infra_observer.kubernetes_api import load_configuration

        settings = KubernetesSettings(kubeconfig={str(two_contexts)!r})
        configuration = asyncio.run(load_configuration(settings))
        assert configuration.host == "https://first.example:6443", configuration.host
        generated = ("kubernetes_asyncio.client.models", "kubernetes_asyncio.client.api.")
        heavy = [name for name in sys.modules if name.startswith(generated)]
        assert not heavy, heavy[:5]
        assert "kubernetes_asyncio" not in sys.modules
        assert "aiohttp" not in sys.modules  # imported by the OIDC helper only

        # An OIDC user's token refresh still gets the library's own requestor.
        loader = sys.modules["kubernetes_asyncio.config.kube_config"]
        requestor = loader.OpenIDRequestor("id", "secret", "https://issuer.example")
        assert type(requestor).__module__ == "kubernetes_asyncio.config.openid"
        assert "aiohttp" in sys.modules
        assert "kubernetes_asyncio.client.models" not in sys.modules
        again = asyncio.run(load_configuration(settings))  # a reload takes the same path
        assert type(again) is type(configuration)
        assert "kubernetes_asyncio.client.models" not in sys.modules

        import kubernetes_asyncio
        from kubernetes_asyncio import client, config
        assert client.CoreV1Api and client.V1Pod
        assert client.Configuration is type(configuration)

        async def full_client():
            api = await config.new_client_from_config(config_file={str(two_contexts)!r})
            await api.close()
            return api
        assert isinstance(asyncio.run(full_client()), client.ApiClient)
        print("ok")
        """
    )
    assert run_fresh(script) == "ok"


def run_fresh(script: str) -> str:
    """What `script` prints, run in a fresh interpreter; its errors fail the test."""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_each_loader_loads_without_the_generated_api(two_contexts: Path, tmp_path: Path) -> None:
    """In-cluster credentials, then a kubeconfig, in one fresh interpreter: each loader is
    imported on its own, neither brings the generated client, and both fill the library's
    own `Configuration` class."""
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("sa-token")
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    script = textwrap.dedent(
        f"""
        import asyncio, os, sys
        from infra_observer.config import KubernetesSettings
        from infra_observer.kubernetes_api import load_configuration
        from infra_observer.tuning.kubernetes_loaders import loader

        incluster = loader("incluster_config")
        assert "kubernetes_asyncio.config.kube_config" not in sys.modules
        incluster.SERVICE_TOKEN_FILENAME = {str(token)!r}
        incluster.SERVICE_CERT_FILENAME = {str(ca)!r}
        os.environ.pop("KUBECONFIG", None)
        os.environ.update(KUBERNETES_SERVICE_HOST="10.0.0.1", KUBERNETES_SERVICE_PORT="443")
        pod = asyncio.run(load_configuration(KubernetesSettings()))
        assert pod.host == "https://10.0.0.1:443", pod.host
        assert asyncio.run(pod.get_api_key_with_prefix("BearerToken")) == "Bearer sa-token"
        assert "kubernetes_asyncio.config.kube_config" not in sys.modules
        assert "yaml" not in sys.modules  # the kubeconfig loader's, not needed in a pod

        settings = KubernetesSettings(kubeconfig={str(two_contexts)!r}, context="second")
        user = asyncio.run(load_configuration(settings))
        assert user.host == "https://second.example:6443", user.host
        assert type(user) is type(pod)
        generated = ("kubernetes_asyncio.client.models", "kubernetes_asyncio.client.api.")
        assert not [name for name in sys.modules if name.startswith(generated)]
        assert "kubernetes_asyncio" not in sys.modules
        assert "aiohttp" not in sys.modules

        from kubernetes_asyncio.client import Configuration
        assert type(pod) is Configuration
        print("ok")
        """
    )
    assert run_fresh(script) == "ok"
