"""Session-wide fixtures for the real peers (started lazily, only when a test asks).

A peer that cannot start fails the tests that need it, in CI and locally alike: the
slow tier is skipped on purpose with ``-m "not peers"``, never silently.
Tests under tests/integration/ get the ``peers`` marker automatically.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

# `from tests.peers import ...` must work however pytest is started (plain `pytest`
# does not put the repository root on sys.path).
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.peers import (  # noqa: E402
    DockerPeer,
    KubePeer,
    MotoPeer,
    PrefectPeer,
    PrometheusPeer,
    RegistryPeer,
)
from tests.peers.node import NodePeer  # noqa: E402
from tests.peers.prefect import TEST_AUTH_STRING  # noqa: E402

log = logging.getLogger(__name__)

INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"

P = TypeVar("P")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration/ needs the peers, marked or not."""
    for item in items:
        if INTEGRATION_DIR in Path(str(item.path)).resolve().parents and not any(
            item.iter_markers("peers")
        ):
            item.add_marker(pytest.mark.peers)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def start_peer(name: str, start: Callable[[], P]) -> P:
    """Start a peer or fail loudly: a missing peer is never a skip (CI or not)."""
    try:
        return start()
    except Exception as exc:
        error = f"{name} peer could not start: {exc}"
    if not in_ci():
        error += "\n(run scripts/provision-peers; to leave out this tier: pytest -m 'not peers')"
    # Outside the except block so the report is this message, not a chained traceback.
    pytest.fail(error, pytrace=False)


@pytest.fixture(scope="session")
def kube() -> Iterator[KubePeer]:
    """etcd + kube-apiserver (admin token, RBAC, --watch-cache=false)."""
    peer = start_peer("kube-apiserver", lambda: KubePeer().start())
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def node() -> Iterator[NodePeer]:
    """A one-node cluster: its own etcd + kube-apiserver (Node,RBAC), controller-manager,
    scheduler and a kubelet on a private containerd; busybox and pause images imported."""
    peer = start_peer("node", lambda: NodePeer().start())
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def dockerd() -> Iterator[DockerPeer]:
    """A private dockerd on a unix socket with the busybox image imported."""
    peer = start_peer("dockerd", lambda: DockerPeer().start())
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoPeer]:
    """moto_server (SQS, ECS) on loopback."""
    peer = start_peer("moto", lambda: MotoPeer().start())
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def prefect() -> Iterator[PrefectPeer]:
    """A Prefect server without auth; events readable ~0.5 s after they are stored."""
    peer = start_peer("prefect", lambda: PrefectPeer().start())
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def prefect_basic_auth() -> Iterator[PrefectPeer]:
    """A second Prefect server that requires basic auth (``peer.auth_string``)."""
    peer = start_peer(
        "prefect (basic auth)", lambda: PrefectPeer(auth_string=TEST_AUTH_STRING).start()
    )
    yield peer
    peer.stop()


@pytest.fixture
def prefect_isolated() -> Iterator[PrefectPeer]:
    """A Prefect server of the test's own, for tests that post an id twice.

    Prefect 3.8.8's SQLite persister fails a write batch made only of already-stored ids and
    may drop new events caught in the same batch: kept away from the shared server.
    """
    peer = start_peer("prefect (isolated)", lambda: PrefectPeer().start())
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def prometheus() -> Iterator[PrometheusPeer]:
    """A Prometheus server scraping and evaluating every second; ``configure`` gives it
    targets and rules."""
    peer = start_peer("prometheus", lambda: PrometheusPeer().start())
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def registry() -> Iterator[RegistryPeer]:
    """A container registry (Debian's docker-registry) on loopback, plain HTTP."""
    peer = start_peer("docker-registry", lambda: RegistryPeer().start())
    yield peer
    peer.stop()
