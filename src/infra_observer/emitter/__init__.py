"""The emitter: accepts events from the sources and delivers them to one sink."""

from infra_observer.emitter.emitter import Emitter
from infra_observer.emitter.sinks import (
    EventsApiSink,
    Sink,
    StdoutSink,
    events_api_sink,
)

__all__ = ["Emitter", "EventsApiSink", "Sink", "StdoutSink", "events_api_sink"]
