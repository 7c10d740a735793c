"""The container image, built from the Dockerfile and run by the harness's real dockerd.

No registry is reachable here, so the Dockerfile's public base images are replaced by local
stand-ins that scripts/provision-peers builds from Debian 12 packages (step 6): a minbase
rootfs for ``BUILD_IMAGE`` and a distroless-like Python 3.11 rootfs for ``RUNTIME_IMAGE``
(no shell, no package manager, user ``nonroot`` 65532). The build itself is the real one:
``docker build`` of this repository's Dockerfile, pip resolving from PyPI.

A build takes about a minute; the built image is saved under the cache keyed by a hash of
everything the build reads, so an unchanged tree only loads it again.

The container runs the way the docs tell users to run it: ``--read-only``, ``--user
65532:65532``, no writable mount at all, the Docker socket bind-mounted. The harness's dockerd
has no bridge, so it shares the host network and listens on loopback only.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.peers import DockerPeer
from tests.peers._util import cache_dir, free_port, manifest, provisioned, wait_until

ROOT = Path(__file__).resolve().parents[2]
# What the build context holds (.dockerignore lets in only these) plus the build recipe.
BUILD_INPUTS = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "src")
# Bounds on the stand-in bases; docs/production.md has the measured figures. The venv layer
# is what this project adds on top of any Python 3.11 base.
MAX_IMAGE_BYTES = 200_000_000
MAX_VENV_LAYER_BYTES = 120_000_000
WAIT_SECONDS = 90.0
TEST_LABEL = "io.infra-observer.test"
BUILD_TIMEOUT = 1200
# The first test also builds the image when the cache has no build of this tree.
pytestmark = [pytest.mark.peers, pytest.mark.timeout(BUILD_TIMEOUT + 300)]


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


def inputs_hash(bases_version: str) -> str:
    digest = hashlib.sha256(bases_version.encode())
    for name in BUILD_INPUTS:
        path = ROOT / name
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if not file.is_file() or "__pycache__" in relative or ".egg-info" in relative:
                continue
            digest.update(relative.encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def tag_safe(text: str) -> str:
    return re.sub(r"[^\w.-]", "_", text)[:120]


def import_base(image: Image, tarball: Path, tag: str) -> None:
    if image.cli("image", "inspect", tag, check=False).returncode != 0:
        image.cli("import", str(tarball), tag, timeout=300)


def build(image: Image, *, build_base: str, saved: Path) -> None:
    """``docker build`` with the stand-in bases; saved for the next run with the same inputs."""
    log = saved.with_suffix(".build.log")
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
                str(ROOT),
            ],
            env=image.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        pytest.fail(f"docker build failed (exit {result.returncode}); log {log}:\n{tail}")
    # Only the newest build is kept: each is about 140 MB.
    for old in saved.parent.glob("infra-observer-*"):
        if not old.name.startswith(saved.stem + "."):
            old.unlink()
    image.cli("save", "-o", str(saved.with_suffix(".tmp")), image.tag, timeout=300)
    saved.with_suffix(".tmp").rename(saved)


@pytest.fixture(scope="module")
def image(dockerd: DockerPeer) -> Image:
    version = manifest().get("image_bases_version", "")
    build_tar = provisioned("image_build_rootfs")
    runtime_tar = provisioned("image_runtime_rootfs")
    key = inputs_hash(version)
    result = Image(
        tag=f"infra-observer:test-{key}",
        runtime_base=f"infra-observer-runtime-base:{tag_safe(version)}",
        docker=provisioned("docker"),
        env={"PATH": "/usr/bin:/bin", **dockerd.env()},
    )
    import_base(result, runtime_tar, result.runtime_base)
    saved = cache_dir() / "images" / version / f"infra-observer-{key}.tar"
    if result.cli("image", "inspect", result.tag, check=False).returncode == 0:
        return result
    if saved.exists():
        result.cli("load", "-i", str(saved), timeout=300)
        return result
    build_base = f"infra-observer-build-base:{tag_safe(version)}"
    import_base(result, build_tar, build_base)
    build(result, build_base=build_base, saved=saved)
    return result


@dataclass
class Running:
    name: str
    port: int
    run_label: str


def start(image: Image, dockerd: DockerPeer) -> Running:
    socket_gid = dockerd.socket.stat().st_gid
    running = Running(name=f"io-image-{uuid.uuid4().hex[:8]}", port=free_port(), run_label="")
    running.run_label = running.name
    image.cli(
        "run",
        "--detach",
        "--name",
        running.name,
        "--read-only",
        "--user",
        "65532:65532",
        # The socket is root:docker 0660 on the host; the daemon needs its group, not root.
        "--group-add",
        str(socket_gid),
        "--network",
        "host",
        "--volume",
        f"{dockerd.socket}:/var/run/docker.sock",
        "--env",
        "INFRA_OBSERVER_DOCKER_ENABLED=true",
        "--env",
        f"INFRA_OBSERVER_DOCKER_LABEL_FILTERS={TEST_LABEL}={running.run_label}",
        "--env",
        f"INFRA_OBSERVER_HEALTH_PORT={running.port}",
        # Host network: loopback only, not the image's 0.0.0.0.
        "--env",
        "INFRA_OBSERVER_HEALTH_HOST=127.0.0.1",
        # The image's own check command, run every second instead of every 30 s so the
        # status settles quickly.
        "--health-interval",
        "1s",
        image.tag,
    )
    return running


@pytest.fixture(scope="module")
def container(image: Image, dockerd: DockerPeer) -> Iterator[Running]:
    running = start(image, dockerd)
    yield running
    image.cli("rm", "--force", running.name, check=False)
    dockerd.request(
        "POST", "/containers/prune", params={"filters": json.dumps({"label": [TEST_LABEL]})}
    )


def get(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)


def test_image_is_small(image: Image) -> None:
    total = image.inspect(image.tag)["Size"]
    base = image.inspect(image.runtime_base)["Size"]
    assert total < MAX_IMAGE_BYTES, f"image is {total / 1e6:.1f} MB"
    assert total - base < MAX_VENV_LAYER_BYTES, f"venv layer is {(total - base) / 1e6:.1f} MB"


def test_image_config(image: Image) -> None:
    config = image.inspect(image.tag)["Config"]
    assert config["Entrypoint"] == ["infra-observer", "run"]
    assert config["User"] == "65532:65532"
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])


def test_health_endpoints_answer(container: Running) -> None:
    for path in ("/healthz", "/readyz"):
        assert wait_ok(container.port, path).status_code == 200


def wait_ok(port: int, path: str) -> httpx.Response:
    def probe() -> httpx.Response | None:
        response = get(port, path)
        return response if response.status_code == 200 else None

    return wait_until(probe, timeout=WAIT_SECONDS, what=f"{path} of the container")


def test_docker_healthcheck_turns_healthy(image: Image, container: Running) -> None:
    def healthy() -> bool | None:
        return (
            True
            if image.inspect(container.name)["State"]["Health"]["Status"] == "healthy"
            else None
        )

    wait_until(healthy, timeout=WAIT_SECONDS, what="Docker health status healthy")
    log = image.inspect(container.name)["State"]["Health"]["Log"]
    assert log[-1]["ExitCode"] == 0


def test_no_shell_in_the_image(image: Image, container: Running) -> None:
    for shell in ("sh", "/bin/sh", "/bin/bash"):
        result = image.cli("exec", container.name, shell, "-c", "true", check=False)
        assert result.returncode != 0, f"{shell} ran in the image"
        # The CLI of Debian's docker.io prints the runtime's error on stdout.
        output = (result.stdout + result.stderr).lower()
        assert "executable file not found" in output or "no such file" in output, output


def test_runs_as_nonroot_with_a_read_only_root(image: Image, container: Running) -> None:
    info = image.inspect(container.name)
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    status = Path(f"/proc/{info['State']['Pid']}/status").read_text()
    uids = re.search(r"^Uid:\s+(.*)$", status, re.M)
    gids = re.search(r"^Gid:\s+(.*)$", status, re.M)
    assert uids
    assert gids
    assert set(uids.group(1).split()) == {"65532"}
    assert set(gids.group(1).split()) == {"65532"}


async def test_labelled_container_is_reported_on_stdout(
    image: Image, container: Running, dockerd: DockerPeer
) -> None:
    wait_ok(container.port, "/readyz")
    flow_run_id = str(uuid.uuid4())
    observed = await dockerd.run_container(
        ["true"],
        labels={"io.prefect.flow-run-id": flow_run_id, TEST_LABEL: container.run_label},
    )
    resource_id = f"prefect.docker.container.{observed}"

    def events() -> list[dict[str, Any]] | None:
        lines = image.cli("logs", container.name).stdout.splitlines()
        found = [json.loads(line) for line in lines if resource_id in line]
        names = [e["event"] for e in found]
        return found if "prefect.docker.container.exited" in names else None

    found = wait_until(events, timeout=WAIT_SECONDS, what="events of the labelled container")
    assert found[0]["resource"]["prefect.resource.id"] == resource_id
    related = {r["prefect.resource.id"] for e in found for r in e["related"]}
    assert f"prefect.flow-run.{flow_run_id}" in related


def test_docker_stop_exits_zero(image: Image, dockerd: DockerPeer) -> None:
    running = start(image, dockerd)
    try:
        wait_ok(running.port, "/readyz")
        # SIGTERM, and SIGKILL only after the grace period: exit code 0 means the daemon
        # stopped by itself (a kill gives 137).
        image.cli("stop", "--time", "30", running.name, timeout=90)
        state = image.inspect(running.name)["State"]
        assert state["ExitCode"] == 0, state
        assert state["OOMKilled"] is False
        logs = image.cli("logs", running.name)
        assert re.search(r'"event":\s*"stopped"', logs.stdout + logs.stderr)
    finally:
        image.cli("rm", "--force", running.name, check=False)
