"""The Docker container watcher: Engine API events and listings of flow-run containers.

The package itself imports none of its modules: `catalog` (the container events' builders)
is read by `infra-observer emit` at every start, and must not bring the watcher's HTTP stack
with it.
"""
