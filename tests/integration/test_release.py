"""scripts/release end to end: a real registry (Debian's docker-registry), the harness's
dockerd and kube-apiserver, and a fresh virtual environment.

The script builds the packages, the image and the chart and pushes the last two; the tests
then read them back the ways a user would: the registry API, ``helm install oci://`` and
``helm upgrade`` into the apiserver, ``docker pull`` of the reference the Deployment names
(there is no kubelet to pull it), and ``pip install`` of the wheel.

The image is built on the stand-in bases of tests/peers/image.py (no public registry is
reachable), as test_image.py builds it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import subprocess
import sys
import tomllib
import uuid
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.peers import DockerPeer, KubePeer, RegistryPeer
from tests.peers._util import manifest, provisioned
from tests.peers.image import BUILD_TIMEOUT, Image, import_base, tag_safe
from tests.peers.kube import ensure_namespace

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "scripts" / "release"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
# Building the image (when dockerd has no cached layers) and installing the wheel's
# dependencies from the package index dominate.
pytestmark = [pytest.mark.peers, pytest.mark.timeout(BUILD_TIMEOUT + 600)]


@dataclass
class Released:
    registry: RegistryPeer
    out: Path
    image: str
    chart: str
    output: str


def release_env(dockerd: DockerPeer, home: Path) -> dict[str, str]:
    """The release's environment: the test dockerd, the provisioned helm on PATH, and helm's
    and docker's configuration in a temp dir."""
    path = os.pathsep.join([str(provisioned("helm").parent), "/usr/bin", "/bin"])
    return {
        **os.environ,
        **dockerd.env(),
        "PATH": path,
        "DOCKER_CONFIG": str(home / "docker"),
        "HELM_CACHE_HOME": str(home / "helm" / "cache"),
        "HELM_CONFIG_HOME": str(home / "helm" / "config"),
        "HELM_DATA_HOME": str(home / "helm" / "data"),
    }


def stand_in_bases(dockerd: DockerPeer) -> list[str]:
    """Build arguments selecting the stand-in base images, imported into ``dockerd``."""
    version = tag_safe(manifest().get("image_bases_version", ""))
    bases = {
        "BUILD_IMAGE": (f"infra-observer-build-base:{version}", "image_build_rootfs"),
        "RUNTIME_IMAGE": (f"infra-observer-runtime-base:{version}", "image_runtime_rootfs"),
    }
    docker = Image(tag="", runtime_base="", docker=provisioned("docker"), env=dockerd.env())
    docker.env["PATH"] = "/usr/bin:/bin"
    args: list[str] = []
    for key, (tag, rootfs) in bases.items():
        import_base(docker, provisioned(rootfs), tag)
        args += ["--build-arg", f"{key}={tag}"]
    return args


def run_release(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RELEASE), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT + 300,
        check=False,
    )


@pytest.fixture(scope="module")
def released(
    registry: RegistryPeer, dockerd: DockerPeer, tmp_path_factory: pytest.TempPathFactory
) -> Released:
    home = tmp_path_factory.mktemp("release-home")
    out = home / "dist"
    result = run_release(
        VERSION,
        "--registry",
        registry.address,
        "--plain-http",
        "--out",
        str(out),
        "--network",
        "host",
        *stand_in_bases(dockerd),
        env=release_env(dockerd, home),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return Released(
        registry=registry,
        out=out,
        image=f"{registry.address}/infra-observer:{VERSION}",
        chart=f"oci://{registry.address}/charts/infra-observer",
        output=output,
    )


def docker(dockerd: DockerPeer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(provisioned("docker")), *args],
        env={"PATH": "/usr/bin:/bin", **dockerd.env()},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )


def manifest_digest(registry: RegistryPeer, repository: str, reference: str) -> str:
    response = registry.get(
        f"/v2/{repository}/manifests/{reference}",
        accept="application/vnd.docker.distribution.manifest.v2+json, "
        "application/vnd.oci.image.manifest.v1+json",
    )
    response.raise_for_status()
    return response.headers["Docker-Content-Digest"]


# ---------------------------------------------------------------- refusals (no build)


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        ("v1.0", "is not SemVer"),
        ("1.2.3+build.4", "is not SemVer"),
        ("99.0.0", "pyproject.toml version is"),
    ],
)
def test_release_refuses_a_bad_or_mismatched_version(
    tmp_path: Path, version: str, reason: str
) -> None:
    result = run_release(version, "--registry", "127.0.0.1:9", "--out", str(tmp_path / "dist"))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert reason in output
    assert "FAILED" in output
    # Refused before anything was built.
    assert not (tmp_path / "dist").exists()


# ---------------------------------------------------------------- what was pushed


def test_the_packages_pass_twine_check(released: Released) -> None:
    names = sorted(p.name for p in released.out.iterdir())
    assert f"infra-observer-{VERSION}.tgz" in names
    assert f"infra_observer-{VERSION}.tar.gz" in names
    assert f"infra_observer-{VERSION}-py3-none-any.whl" in names
    assert released.output.count("PASSED") == 2, released.output[-3000:]


def test_the_registry_holds_the_image_and_the_chart(released: Released) -> None:
    registry = released.registry
    catalog = registry.get("/v2/_catalog").json()["repositories"]
    # The registry is the session's: other tests may have pushed beside the release.
    assert {"infra-observer", "charts/infra-observer"} <= set(catalog)
    for repository in ("infra-observer", "charts/infra-observer"):
        tags = registry.get(f"/v2/{repository}/tags/list").json()["tags"]
        assert tags == [VERSION]
    chart = registry.manifest("charts/infra-observer", VERSION)
    assert chart["config"]["mediaType"] == HELM_CONFIG
    chart_config = json.loads(registry.blob("charts/infra-observer", chart["config"]["digest"]))
    assert chart_config["version"] == VERSION
    assert chart_config["appVersion"] == VERSION


def test_the_image_config_carries_the_oci_labels(released: Released) -> None:
    registry = released.registry
    image = registry.manifest("infra-observer", VERSION)
    config = json.loads(registry.blob("infra-observer", image["config"]["digest"]))
    labels = config["config"]["Labels"]
    revision = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.revision"] == revision
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.title"] == "infra-observer"
    assert labels["org.opencontainers.image.description"]
    assert "org.opencontainers.image.source" in labels
    created = dt.datetime.fromisoformat(labels["org.opencontainers.image.created"])
    assert abs(dt.datetime.now(dt.UTC) - created) < dt.timedelta(hours=1)
    assert config["config"]["Entrypoint"] == ["infra-observer", "run"]


# ---------------------------------------------------------------- used from the registry


def deployment_image(kube: KubePeer, namespace: str, name: str) -> str:
    response = httpx.get(
        f"{kube.server}/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
        headers={"Authorization": f"Bearer {kube.token}"},
        verify=ssl.create_default_context(cafile=str(kube.ca_file)),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    containers: list[dict[str, Any]] = response.json()["spec"]["template"]["spec"]["containers"]
    image: str = containers[0]["image"]
    return image


async def test_helm_install_and_upgrade_from_the_registry(
    released: Released, kube: KubePeer, dockerd: DockerPeer
) -> None:
    """docs/production.md, "Install from a registry / upgrade": install by tag, upgrade to
    the same version pinned by digest, and the image that reference names pulls back."""
    namespace = f"io-rel-{uuid.uuid4().hex[:6]}"
    await ensure_namespace(kube, namespace)
    repository = f"{released.registry.address}/infra-observer"
    common = ["--version", VERSION, "--plain-http", "--namespace", namespace]
    kube.helm("install", "obs", released.chart, *common, "--set", f"image.repository={repository}")
    assert deployment_image(kube, namespace, "obs-infra-observer") == released.image

    digest = manifest_digest(released.registry, "infra-observer", VERSION)
    pin = ["--reuse-values", "--set", f"image.digest={digest}"]
    kube.helm("upgrade", "obs", released.chart, *common, *pin)
    status = json.loads(kube.helm("status", "obs", "--namespace", namespace, "-o", "json").stdout)
    assert status["version"] == 2
    assert status["info"]["status"] == "deployed"
    pinned = deployment_image(kube, namespace, "obs-infra-observer")
    assert pinned == f"{repository}@{digest}"

    # No kubelet here: dockerd pulls what the Deployment names, with no local copy left.
    built = docker(dockerd, "image", "inspect", "--format", "{{.Id}}", released.image).stdout
    docker(dockerd, "image", "rm", released.image)
    docker(dockerd, "pull", pinned)
    pulled = docker(dockerd, "image", "inspect", "--format", "{{.Id}}", pinned).stdout
    assert pulled == built


def test_the_wheel_installs_into_a_fresh_venv(released: Released, tmp_path: Path) -> None:
    (wheel,) = released.out.glob("*.whl")
    venv.EnvBuilder(with_pip=True).create(tmp_path / "venv")
    bin_dir = tmp_path / "venv" / "bin"
    subprocess.run(
        [bin_dir / "pip", "install", "-q", "--disable-pip-version-check", wheel],
        check=True,
        capture_output=True,
        timeout=600,
    )
    result = subprocess.run(
        [bin_dir / "infra-observer", "version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == f"infra-observer {VERSION}"
