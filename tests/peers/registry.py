"""Debian's ``docker-registry`` (the distribution registry, ``registry:2``) on loopback.

Plain HTTP on 127.0.0.1: dockerd allows insecure registries on 127.0.0.0/8 without being
told, and helm reaches it with ``--plain-http``. Filesystem storage in a temp dir.
"""

from __future__ import annotations

from typing import Any

import httpx
import yaml

from ._util import ManagedProcess, OneProcessPeer, free_port, provisioned, short_tempdir

MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)


class RegistryPeer(OneProcessPeer):
    """``docker-registry serve`` on a free loopback port.

    Attributes: ``address`` (``127.0.0.1:<port>``, the name to tag and push to), ``url``;
    ``get(path)``, ``manifest(repository, reference)``, ``blob(repository, digest)``.
    """

    def __init__(self) -> None:
        super().__init__(short_tempdir("io-reg-"))
        self.binary = provisioned("registry")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"

    def start(self) -> RegistryPeer:
        config = self.state_dir / "config.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "version": 0.1,
                    "log": {"level": "warn"},
                    "storage": {"filesystem": {"rootdirectory": str(self.state_dir / "data")}},
                    "http": {"addr": self.address},
                }
            )
        )
        proc = ManagedProcess(
            "docker-registry",
            [self.binary, "serve", config],
            log_path=self.state_dir / "registry.log",
        )

        def ready() -> bool | None:
            return True if httpx.get(f"{self.url}/v2/", timeout=2).status_code == 200 else None

        return self._launch(proc, ready=ready, timeout=30)

    def get(self, path: str, *, accept: str | None = None) -> httpx.Response:
        """A registry API call (``/v2/...``); the caller checks the status."""
        headers = {"Accept": accept} if accept else None
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=30)

    def manifest(self, repository: str, reference: str) -> dict[str, Any]:
        """The image manifest of ``repository:reference`` (OCI or Docker schema 2)."""
        response = self.get(f"/v2/{repository}/manifests/{reference}", accept=MANIFEST_TYPES)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def blob(self, repository: str, digest: str) -> bytes:
        response = self.get(f"/v2/{repository}/blobs/{digest}")
        response.raise_for_status()
        return response.content
