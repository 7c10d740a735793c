"""The Kubernetes pod watcher: `watch` (list-then-watch I/O) and `translate` (pure).

The package itself imports none of its modules: `catalog` (the pod events' builders) is read
by `infra-observer emit` at every start, and must not bring the watcher's HTTP stack with it.
"""
