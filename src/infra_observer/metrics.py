"""Every Prometheus metric of the daemon, registered on a registry the app creates and injects.

A base module: each component counts through the one `Metrics` object the app builds, so
the metric names live in one place and this module imports nothing of the project.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

_PREFIX = "infra_observer"


class LoopCounter(Collector):
    """A counter by labels for one writer on the event loop: plain integers, read when
    scraped (from the health server's thread: copying the counts holds the GIL).

    For a count taken for every event: a `Counter` takes a lock per increment, a cost on
    the watch path that a plain integer does not have (docs/performance.md).
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._counts: dict[tuple[str, ...], int] = {}
        registry.register(self)

    def inc(self, labels: tuple[str, ...]) -> None:
        self._counts[labels] = self._counts.get(labels, 0) + 1

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for labels, count in list(self._counts.items()):
            family.add_metric(labels, count)
        yield family


class Metrics:
    """Every metric of the daemon; one instance per process, built in `app`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._register_event_counts(registry)
        self._register_source_metrics(registry)
        self._register_delivery_metrics(registry)
        self._register_process_metrics(registry)
        self._register_lifecycle_metrics(registry)

    def _register_event_counts(self, registry: CollectorRegistry) -> None:
        """What became of each event: observed, emitted, rejected, duplicate, undelivered."""
        self.events_observed = LoopCounter(
            f"{_PREFIX}_events_observed",
            "Events produced by a source, before validation and deduplication.",
            ["source", "event"],
            registry=registry,
        )
        self.events_emitted = Counter(
            f"{_PREFIX}_events_emitted",
            "Events accepted by the sink.",
            ["source", "event"],
            registry=registry,
        )
        self.events_rejected = Counter(
            f"{_PREFIX}_events_rejected",
            "Events refused locally (invalid), by the server (server_rejected) or, alone, by a "
            "proxy's size limit (too_large); never delivered.",
            ["source", "reason"],
            registry=registry,
        )
        self.events_duplicate = Counter(
            f"{_PREFIX}_events_duplicate",
            "Events not sent again: their id was delivered by this process, or found stored "
            "on the server after a start.",
            ["source"],
            registry=registry,
        )
        self.events_undelivered = Counter(
            f"{_PREFIX}_events_undelivered",
            "Events still queued when the shutdown deadline ran out.",
            ["source"],
            registry=registry,
        )
        self.events_retried = Counter(
            f"{_PREFIX}_events_retried",
            "Events in a batch whose delivery attempt failed and will be retried.",
            ["source", "event"],
            registry=registry,
        )

    def _register_source_metrics(self, registry: CollectorRegistry) -> None:
        """What the sources saw of their input and of their peers."""
        self.input_errors = Counter(
            f"{_PREFIX}_input_errors",
            "Malformed objects seen by a source (logged with what was wrong).",
            ["source", "kind"],
            registry=registry,
        )
        self.objects_skipped = Counter(
            f"{_PREFIX}_objects_skipped",
            "Pods, containers or tasks given no event because their flow-run id is empty or "
            "not a UUID; each counted once (logged as object_skipped).",
            ["source", "reason"],
            registry=registry,
        )
        self.source_reconnects = Counter(
            f"{_PREFIX}_source_reconnects",
            "Times a source re-established its stream, by reason.",
            ["source", "reason"],
            registry=registry,
        )
        self.source_ready = Gauge(
            f"{_PREFIX}_source_ready",
            "1 once a source has synced its initial state and is following changes.",
            ["source"],
            registry=registry,
        )

    def _register_delivery_metrics(self, registry: CollectorRegistry) -> None:
        """How delivery goes: retries, the queue, the spool, batches."""
        self.stored_lookups = Counter(
            f"{_PREFIX}_stored_lookups",
            "Reads of /events/filter for ids an earlier process may have delivered, by result.",
            ["result"],
            registry=registry,
        )
        self.delivery_retries = Counter(
            f"{_PREFIX}_delivery_retries",
            "Failed delivery attempts that will be retried, by reason.",
            ["reason"],
            registry=registry,
        )
        self.spool_records_unreadable = Counter(
            f"{_PREFIX}_spool_records_unreadable",
            "Spool records that could not be read back at start (damaged on disk): logged, "
            "skipped and settled.",
            registry=registry,
        )
        self.queue_depth = Gauge(
            f"{_PREFIX}_queue_depth", "Events waiting to be delivered.", registry=registry
        )
        self.batch_seconds = Histogram(
            f"{_PREFIX}_batch_seconds",
            "Time to deliver one batch, retries included.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.last_delivery = Gauge(
            f"{_PREFIX}_last_delivery_timestamp_seconds",
            "Unix time of the last successful delivery.",
            registry=registry,
        )

    def _register_process_metrics(self, registry: CollectorRegistry) -> None:
        """The process itself: leadership, the event loop, and the bounds it hit."""
        self.leader = Gauge(
            f"{_PREFIX}_leader",
            "1 while this replica holds the leader election Lease, 0 while it waits; "
            "no sample without leader election.",
            ["lease"],
            registry=registry,
        )
        self.event_loop_lag = Gauge(
            f"{_PREFIX}_event_loop_lag_seconds",
            "How long the event loop took to run a callback handed to it when scraped "
            "(the health server's answer timeout when it did not run in time).",
            registry=registry,
        )
        self.bound_hits = Counter(
            f"{_PREFIX}_bound_hits",
            "Times a documented bound was reached (queue full, cache eviction).",
            ["bound"],
            registry=registry,
        )

    def _register_lifecycle_metrics(self, registry: CollectorRegistry) -> None:
        """What the lifecycle layer proposed and wrote to flow runs."""
        self.proposals = Counter(
            f"{_PREFIX}_lifecycle_proposals",
            "States proposed to flow runs, by the server's answer (accept, reject, abort, "
            "wait), or failed, or not made (not_admitted by the run's state, unknown_run, "
            "withdrawn: the infrastructure no longer pending before the run's turn).",
            ["source", "state", "outcome"],
            registry=registry,
        )
        self.diagnoses = Counter(
            f"{_PREFIX}_lifecycle_diagnoses",
            "Diagnoses written to flow runs' logs, by category.",
            ["source", "category"],
            registry=registry,
        )
        self.log_lines_forwarded = Counter(
            f"{_PREFIX}_lifecycle_log_lines_forwarded",
            "Lines of crashed infrastructure's logs written to their flow runs' logs.",
            ["source"],
            registry=registry,
        )
        self.crash_logs_unread = Counter(
            f"{_PREFIX}_lifecycle_crash_logs_unread",
            "Accepted crashes whose infrastructure's logs could not be read.",
            ["source"],
            registry=registry,
        )
        self.lifecycle_retries = Counter(
            f"{_PREFIX}_lifecycle_retries",
            "Failed calls to the orchestration or logs API, retried with backoff, by error.",
            ["reason"],
            registry=registry,
        )
