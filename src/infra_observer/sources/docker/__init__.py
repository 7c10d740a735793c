"""The Docker container watcher: Engine API events and listings of flow-run containers."""

from infra_observer.sources.docker.stream import DockerSource

__all__ = ["DockerSource"]
