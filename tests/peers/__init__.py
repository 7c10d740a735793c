"""Real peers for the integration tests: kube-apiserver + etcd, dockerd, moto, Prefect server,
Prometheus, a container registry.

Binaries come from the cache that scripts/provision-peers fills; each peer starts on free
loopback ports (or a unix socket), waits until it is ready, and on ``stop()`` kills only
the process groups it started and removes its temp state.
"""

from ._util import PeerUnavailableError, cache_dir, free_port, wait_until
from .docker import DockerPeer
from .kube import KubePeer
from .moto import MotoPeer
from .prefect import PrefectPeer
from .prometheus import PrometheusPeer
from .registry import RegistryPeer

__all__ = [
    "DockerPeer",
    "KubePeer",
    "MotoPeer",
    "PeerUnavailableError",
    "PrefectPeer",
    "PrometheusPeer",
    "RegistryPeer",
    "cache_dir",
    "free_port",
    "wait_until",
]
