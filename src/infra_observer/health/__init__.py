"""The HTTP endpoints for probes and Prometheus."""

from infra_observer.health.server import HealthServer

__all__ = ["HealthServer"]
