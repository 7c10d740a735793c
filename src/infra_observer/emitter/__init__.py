"""Delivery of events: queue, batching, retries, and the sinks they go to."""

from infra_observer.emitter.emitter import Emitter
from infra_observer.emitter.sinks import (
    EventsApiSink,
    Sink,
    StdoutSink,
    events_api_client,
    events_api_sink,
)

__all__ = ["Emitter", "EventsApiSink", "Sink", "StdoutSink", "events_api_client", "events_api_sink"]
