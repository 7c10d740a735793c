"""Debian's ``docker-registry`` (the distribution registry, ``registry:2``) on loopback.

Plain HTTP on 127.0.0.1: dockerd allows insecure registries on 127.0.0.0/8 without being
told, and helm reaches it with ``--plain-http``. Filesystem storage in a temp dir.
"""

from __future__ import annotations

from typing import Any

import httpx
import yaml

from ._util import ManagedProcess, free_port, provisioned, remove_tree, short_tempdir, wait_until

MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)


class RegistryPeer:
    """``docker-registry serve`` on a free loopback port.

    Attributes: ``address`` (``127.0.0.1:<port>``, the name to tag and push to), ``url``;
    ``get(path)``, ``manifest(repository, reference)``, ``blob(repository, digest)``.
    """

    def __init__(self) -> None:
        self.binary = provisioned("registry")
        self.state_dir = short_tempdir("io-reg-")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self._proc: ManagedProcess | None = None

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
        self._proc = ManagedProcess(
            "docker-registry",
            [self.binary, "serve", config],
            log_path=self.state_dir / "registry.log",
        )
        self._proc.start()
        proc = self._proc

        def ready() -> bool | None:
            return True if httpx.get(f"{self.url}/v2/", timeout=2).status_code == 200 else None

        try:
            wait_until(
                ready,
                timeout=30,
                what="docker-registry",
                alive=proc.running,
                diagnostics=proc.diagnostics,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None
        remove_tree(self.state_dir)

    def __enter__(self) -> RegistryPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

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
