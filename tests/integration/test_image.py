"""The container image, built from the Dockerfile and run by the harness's real dockerd.

How the image is built (the real ``docker build`` on local stand-ins for the base images,
cached by a hash of the build's inputs) is in tests/peers/image.py, shared with
``python -m benchmarks.imports --image``.

The container runs the way the docs tell users to run it: ``--read-only``, ``--user
65532:65532``, no writable mount at all, the Docker socket bind-mounted. The harness's dockerd
has no bridge, so it shares the host network and listens on loopback only.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.peers import DockerPeer
from tests.peers._util import free_port, wait_until
from tests.peers.image import BUILD_TIMEOUT, RUN_OPTIONS, Image, ImageBuildError, built_image

# Bounds on the stand-in bases; docs/production.md has the measured figures. The venv and the
# standard library's bytecode are what this project adds on top of any Python 3.11 base.
MAX_IMAGE_BYTES = 200_000_000
MAX_ADDED_BYTES = 120_000_000
WAIT_SECONDS = 90.0
TEST_LABEL = "io.infra-observer.test"
# The first test also builds the image when the cache has no build of this tree.
pytestmark = [pytest.mark.peers, pytest.mark.timeout(BUILD_TIMEOUT + 300)]


@pytest.fixture(scope="module")
def image(dockerd: DockerPeer) -> Image:
    try:
        return built_image(dockerd)
    except ImageBuildError as exc:
        pytest.fail(str(exc))


@dataclass
class Running:
    name: str
    port: int
    run_label: str


def start(image: Image, dockerd: DockerPeer) -> Running:
    socket_gid = dockerd.socket.stat().st_gid
    running = Running(name=f"io-image-{uuid.uuid4().hex[:8]}", port=free_port(), run_label="")
    running.run_label = running.name
    image.run(
        running.name,
        # The socket is root:docker 0660 on the host; the daemon needs its group, not root.
        "--group-add",
        str(socket_gid),
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
    assert total - base < MAX_ADDED_BYTES, f"added layers: {(total - base) / 1e6:.1f} MB"


# Run in the image: every module's source without bytecode the interpreter would use, at the
# image's optimization level (hash-checked .pyc whose hash is not the source's count too).
STALE_BYTECODE = """
import importlib.util, json, os, sys
stale = []
for root in ("/usr/lib/python3.11", "/opt/venv/lib/python3.11/site-packages"):
    for directory, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".py"):
                continue
            source = os.path.join(directory, name)
            pyc = importlib.util.cache_from_source(source, optimization=sys.flags.optimize or "")
            try:
                with open(pyc, "rb") as file:
                    head = file.read(16)
            except OSError:
                stale.append(source)
                continue
            flags = int.from_bytes(head[4:8], "little")
            checked = flags == 0b11
            with open(source, "rb") as file:
                if checked and head[8:] != importlib.util.source_hash(file.read()):
                    stale.append(source)
print(json.dumps({"optimize": sys.flags.optimize, "stale": stale}))
"""


def test_every_module_has_bytecode_for_the_image_settings(image: Image) -> None:
    """On a read-only root, a module without usable bytecode is compiled in memory at each
    start: the standard library (the base ships no .pyc) and the venv alike."""
    result = image.cli(
        "run",
        "--rm",
        *RUN_OPTIONS,
        "--entrypoint",
        "/opt/venv/bin/python",
        image.tag,
        "-c",
        STALE_BYTECODE,
    )
    found = json.loads(result.stdout)
    assert found["optimize"] == 2
    assert found["stale"] == []


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
