"""The Kubernetes pod watcher: `watch` (list-then-watch I/O) and `translate` (pure)."""

from infra_observer.sources.kubernetes.translate import PodState, Translation, translate
from infra_observer.sources.kubernetes.watch import KubernetesSource

__all__ = ["KubernetesSource", "PodState", "Translation", "translate"]
