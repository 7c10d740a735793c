"""Events: the model, the catalog of builders, deterministic ids and follows chaining."""

from infra_observer.events.model import Event, Labels

__all__ = ["Event", "Labels"]
