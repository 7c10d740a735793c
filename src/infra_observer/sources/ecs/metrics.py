"""The ECS source's own metrics, registered on the application's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class EcsMetrics:
    """Metrics of this source only; the ones every source shares are in `Metrics`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "infra_observer_ecs_messages",
            "SQS messages handled, by result (what became of the message).",
            ["result"],
            registry=registry,
        )
        self.tag_reads = Counter(
            "infra_observer_ecs_tag_reads",
            "ecs:DescribeTasks calls for task tags, by result.",
            ["result"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "infra_observer_ecs_messages_in_flight",
            "Messages received and not yet deleted or released.",
            registry=registry,
        )
