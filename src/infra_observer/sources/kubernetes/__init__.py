"""The Kubernetes pod source: `source` (the Source and its check), `watch` (the pods of one
scope on the shared list-watch), `translate` and `diagnosis` (pure), `wire` (lazy decoding)."""

from infra_observer.sources.kubernetes.source import KubernetesSource
from infra_observer.sources.kubernetes.translate import PodState, translate

__all__ = ["KubernetesSource", "PodState", "translate"]
