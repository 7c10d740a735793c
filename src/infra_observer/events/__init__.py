"""Events, as every source and the emitter share them; this package knows no source.

The model and its limits, the related resources read from labels, the builders of the
events no source observes, the reference page as data, deterministic ids, `follows`
chaining and the hand-off between sources and the emitter. Each source's own builders are
in `infra_observer.sources.<name>.catalog`.
"""

from infra_observer.events.model import Event, Labels

__all__ = ["Event", "Labels"]
