"""The container image, built from the Dockerfile on the stand-in bases, in a DockerPeer.

No registry is reachable here, so the Dockerfile's public base images are replaced by local
stand-ins that scripts/provision-peers builds from Debian 12 packages (step 6): a minbase
rootfs for ``BUILD_IMAGE`` and a distroless-like Python 3.11 rootfs for ``RUNTIME_IMAGE``
(no shell, no package manager, user ``nonroot`` 65532). The build itself is the real one:
``docker build`` of the Dockerfile, pip resolving from PyPI.

A build takes about a minute; the built image is saved under the cache keyed by a hash of
everything the build reads, so an unchanged tree only loads it again.

Containers run the way the docs tell users to run the image: ``--read-only`` and ``--user
65532:65532``. The harness's dockerd has no bridge, so they share the host network.

Used by tests/integration/test_image.py and ``python -m benchmarks.imports --image``.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._util import cache_dir, manifest, provisioned
from .docker import DockerPeer

REPO = Path(__file__).resolve().parents[2]
# What the build context holds (.dockerignore lets in only these) plus the build recipe.
BUILD_INPUTS = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "src")
BUILD_TIMEOUT = 1200
# How users run the image (docs/production.md); the host network since dockerd has no bridge.
RUN_OPTIONS = ("--read-only", "--user", "65532:65532", "--network", "host")


class ImageBuildError(RuntimeError):
    """``docker build`` failed; the message ends with the tail of its log."""


@dataclass
class Image:
    tag: str
    runtime_base: str
    docker: Path
    env: dict[str, str]

    def cli(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.docker), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def inspect(self, name: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(self.cli("inspect", name).stdout)
        return data[0]

    def run(self, name: str, *options: str) -> None:
        """``docker run --detach`` of this image as users run it, plus ``options``."""
        self.cli("run", "--detach", "--name", name, *RUN_OPTIONS, *options, self.tag)


def inputs_hash(bases_version: str, root: Path = REPO) -> str:
    digest = hashlib.sha256(bases_version.encode())
    for name in BUILD_INPUTS:
        path = root / name
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            relative = file.relative_to(root).as_posix()
            if not file.is_file() or "__pycache__" in relative or ".egg-info" in relative:
                continue
            digest.update(relative.encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def tag_safe(text: str) -> str:
    return re.sub(r"[^\w.-]", "_", text)[:120]


def import_base(image: Image, tarball: Path, tag: str) -> None:
    if image.cli("image", "inspect", tag, check=False).returncode != 0:
        image.cli("import", str(tarball), tag, timeout=300)


def build(image: Image, *, build_base: str, root: Path, log: Path) -> None:
    """``docker build`` of ``root`` with the stand-in bases."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        result = subprocess.run(
            [
                str(image.docker),
                "build",
                "--network",
                "host",
                "--build-arg",
                f"BUILD_IMAGE={build_base}",
                "--build-arg",
                f"RUNTIME_IMAGE={image.runtime_base}",
                "-t",
                image.tag,
                str(root),
            ],
            env=image.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise ImageBuildError(f"docker build failed (exit {result.returncode}); log {log}:\n{tail}")


def save(image: Image, saved: Path) -> None:
    """Keep the build for the next run with the same inputs, and only the newest build: each
    is about 140 MB."""
    for old in saved.parent.glob("infra-observer-*"):
        if not old.name.startswith(saved.stem + "."):
            old.unlink()
    image.cli("save", "-o", str(saved.with_suffix(".tmp")), image.tag, timeout=300)
    saved.with_suffix(".tmp").rename(saved)


def built_image(dockerd: DockerPeer, *, root: Path = REPO) -> Image:
    """The image of the tree at ``root`` in ``dockerd``: already there, loaded from the cache,
    or built (and, for this repository's tree, saved to the cache)."""
    version = manifest().get("image_bases_version", "")
    key = inputs_hash(version, root)
    image = Image(
        tag=f"infra-observer:test-{key}",
        runtime_base=f"infra-observer-runtime-base:{tag_safe(version)}",
        docker=provisioned("docker"),
        env={"PATH": "/usr/bin:/bin", **dockerd.env()},
    )
    import_base(image, provisioned("image_runtime_rootfs"), image.runtime_base)
    saved = cache_dir() / "images" / version / f"infra-observer-{key}.tar"
    if image.cli("image", "inspect", image.tag, check=False).returncode == 0:
        return image
    if saved.exists():
        image.cli("load", "-i", str(saved), timeout=300)
        return image
    build_base = f"infra-observer-build-base:{tag_safe(version)}"
    import_base(image, provisioned("image_build_rootfs"), build_base)
    build(image, build_base=build_base, root=root, log=saved.with_suffix(".build.log"))
    if root.resolve() == REPO:
        save(image, saved)
    return image
