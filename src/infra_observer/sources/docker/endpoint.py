"""Where the Docker daemon is and how to reach it: Docker's conventions, then the settings.

`DOCKER_HOST`, `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH` are read as the docker command
reads them, each overridden by the corresponding setting (`INFRA_OBSERVER_DOCKER_*`).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from infra_observer.config import DockerSettings
from infra_observer.errors import ConfigError

DEFAULT_HOST = "unix:///var/run/docker.sock"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Docker's three TLS files: the daemon's CA, our client certificate and its key."""

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the daemon listens: a unix socket, or a TCP address with optional TLS."""

    host: str
    """As configured (`unix:///var/run/docker.sock`, `tcp://10.0.0.5:2376`), for messages."""
    base_url: str
    socket_path: str | None = None
    tls: TlsFiles | None = None


def resolve_endpoint(settings: DockerSettings, environ: Mapping[str, str]) -> Endpoint:
    """The endpoint from the settings, falling back to Docker's environment variables."""
    host = settings.host or environ.get("DOCKER_HOST") or DEFAULT_HOST
    tls_verify = (
        settings.tls_verify
        if settings.tls_verify is not None
        # Docker's rule: any non-empty value turns it on.
        else bool(environ.get("DOCKER_TLS_VERIFY"))
    )
    cert_dir = settings.cert_path or _env_path(environ, "DOCKER_CERT_PATH")
    parts = urlsplit(host)
    if parts.scheme == "unix":
        path = parts.path or parts.netloc
        if not path:
            raise ConfigError(f"Docker host {host!r} names no socket path")
        return Endpoint(host=host, base_url="http://docker", socket_path=path)
    if parts.scheme in ("tcp", "http", "https"):
        return _tcp_endpoint(
            host,
            hostname=parts.hostname,
            port=parts.port,
            tls_verify=tls_verify,
            cert_dir=cert_dir,
            environ=environ,
        )
    raise ConfigError(
        f"Docker host {host!r} is not supported: use unix:///path/to/docker.sock or "
        "tcp://host:port (INFRA_OBSERVER_DOCKER_HOST or DOCKER_HOST)"
    )


def _env_path(environ: Mapping[str, str], name: str) -> Path | None:
    value = environ.get(name)
    return Path(value) if value else None


def _tcp_endpoint(
    host: str,
    *,
    hostname: str | None,
    port: int | None,
    tls_verify: bool,
    cert_dir: Path | None,
    environ: Mapping[str, str],
) -> Endpoint:
    if not hostname:
        raise ConfigError(f"Docker host {host!r} names no host")
    address = f"[{hostname}]" if ":" in hostname else hostname
    if not tls_verify:
        return Endpoint(host=host, base_url=f"http://{address}:{port or 2375}")
    directory = cert_dir or Path(environ.get("HOME", "~")).expanduser() / ".docker"
    files = TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    missing = [str(p) for p in (files.ca, files.cert, files.key) if not p.is_file()]
    if missing:
        raise ConfigError(
            f"TLS is on for Docker host {host} but {', '.join(missing)} is missing: set "
            "INFRA_OBSERVER_DOCKER_CERT_PATH (or DOCKER_CERT_PATH) to the directory holding "
            "ca.pem, cert.pem and key.pem"
        )
    return Endpoint(host=host, base_url=f"https://{address}:{port or 2376}", tls=files)


def ssl_context(tls: TlsFiles | None) -> ssl.SSLContext:
    """The TLS context for the daemon: its CA and our client certificate, when TLS is on.

    Without TLS nothing is verified, so no CA bundle is loaded: it would stay resident and
    never be used.
    """
    if tls is None:
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return _verifying_context(tls)


def _verifying_context(files: TlsFiles) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=str(files.ca))
        context.load_cert_chain(certfile=str(files.cert), keyfile=str(files.key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the Docker TLS files from {files.ca.parent} ({exc}); check ca.pem, "
            "cert.pem and key.pem there (INFRA_OBSERVER_DOCKER_CERT_PATH or DOCKER_CERT_PATH)"
        ) from exc
    return context
