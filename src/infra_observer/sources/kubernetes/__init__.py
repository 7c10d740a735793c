"""The Kubernetes pod source: `source` (the Source and its check), `watch` (the pods of one
scope on the shared list-watch), `translate` and `diagnosis` (pure), `wire` (lazy decoding),
`catalog` (the pod events' builders).

The package itself imports none of its modules: `catalog` is read by `infra-observer emit` at
every start, and must not bring the watcher's HTTP stack with it.
"""
