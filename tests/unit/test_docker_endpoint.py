"""Where the Docker daemon is: Docker's environment variables, overridden by the settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra_observer.config import DockerSettings
from infra_observer.errors import ConfigError
from infra_observer.sources.docker.endpoint import resolve_endpoint, ssl_context


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("not read here\n")
    return tmp_path


def settings(**values: Any) -> DockerSettings:
    return DockerSettings(**values)


@pytest.mark.parametrize(
    ("values", "environ", "base_url", "socket"),
    [
        ({}, {}, "http://docker", "/var/run/docker.sock"),
        ({}, {"DOCKER_HOST": "unix:///run/user/1000/docker.sock"}, "http://docker", None),
        (
            {"host": "unix:///srv/docker.sock"},
            {"DOCKER_HOST": "tcp://10.0.0.5:2375"},
            "http://docker",
            "/srv/docker.sock",
        ),
        ({}, {"DOCKER_HOST": "tcp://10.0.0.5"}, "http://10.0.0.5:2375", None),
        ({}, {"DOCKER_HOST": "tcp://10.0.0.5:4243", "DOCKER_TLS_VERIFY": ""}, None, None),
        ({"host": "tcp://[::1]:2375"}, {}, "http://[::1]:2375", None),
        (
            {"host": "tcp://10.0.0.5:2376", "tls_verify": False},
            {"DOCKER_TLS_VERIFY": "1"},
            "http://10.0.0.5:2376",
            None,
        ),
    ],
)
def test_endpoint_follows_docker_conventions(
    values: dict[str, Any], environ: dict[str, str], base_url: str | None, socket: str | None
) -> None:
    endpoint = resolve_endpoint(settings(**values), environ)
    if base_url is not None:
        assert endpoint.base_url == base_url
    else:
        assert endpoint.base_url == "http://10.0.0.5:4243"
    if socket is not None:
        assert endpoint.socket_path == socket
    assert endpoint.tls is None


def test_tls_from_the_environment(certs: Path) -> None:
    endpoint = resolve_endpoint(
        settings(),
        {
            "DOCKER_HOST": "tcp://docker.example:2376",
            "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CERT_PATH": str(certs),
        },
    )
    assert endpoint.base_url == "https://docker.example:2376"
    assert endpoint.tls is not None
    assert (endpoint.tls.ca, endpoint.tls.cert, endpoint.tls.key) == (
        certs / "ca.pem",
        certs / "cert.pem",
        certs / "key.pem",
    )


def test_settings_override_the_tls_environment(certs: Path, tmp_path: Path) -> None:
    endpoint = resolve_endpoint(
        settings(host="tcp://docker.example", tls_verify=True, cert_path=certs),
        {"DOCKER_CERT_PATH": str(tmp_path / "elsewhere")},
    )
    assert endpoint.base_url == "https://docker.example:2376"
    assert endpoint.tls is not None
    assert endpoint.tls.ca == certs / "ca.pem"


def test_tls_defaults_to_the_home_docker_directory(certs: Path) -> None:
    (certs / ".docker").mkdir()
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (certs / ".docker" / name).write_text("x")
    endpoint = resolve_endpoint(
        settings(host="tcp://docker.example:2376", tls_verify=True), {"HOME": str(certs)}
    )
    assert endpoint.tls is not None
    assert endpoint.tls.key == certs / ".docker" / "key.pem"


@pytest.mark.parametrize(
    ("host", "environ", "message"),
    [
        ("ssh://me@box", {}, "not supported"),
        ("npipe:////./pipe/docker_engine", {}, "not supported"),
        ("tcp://:2375", {}, "names no host"),
        ("tcp://box:2376", {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/nope"}, "missing"),
    ],
)
def test_unusable_endpoints_say_how_to_fix_them(
    host: str, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_endpoint(settings(host=host), environ)


def test_without_tls_no_certificate_is_loaded() -> None:
    context = ssl_context(None)
    assert context.cert_store_stats()["x509_ca"] == 0


def test_unreadable_tls_files_say_where_they_were_looked_for(certs: Path) -> None:
    endpoint = resolve_endpoint(
        settings(host="tcp://docker.example:2376", tls_verify=True, cert_path=certs), {}
    )
    with pytest.raises(ConfigError, match=f"cannot load the Docker TLS files from {certs}"):
        ssl_context(endpoint.tls)
