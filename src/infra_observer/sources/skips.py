"""The one rule for objects whose flow-run id is unusable, shared by every source.

The reference page makes the flow-run related resource always present, so a pod, container
or task whose flow-run label or tag is empty or not a UUID gives no event at all. Each such
object is logged and counted once (by its pod uid, container id or task ARN), not once per
change: `SkipLog` remembers the objects it reported, up to a bound.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import structlog

from infra_observer.metrics import Metrics

log = structlog.get_logger(__name__)

SKIPPED_REMEMBERED_MAX = 4096
"""Skipped objects remembered per `SkipLog`; one forgotten and seen again is logged again."""


class Skip(NamedTuple):
    """Why an object gives no event; `reason` labels the metric."""

    reason: str
    detail: str


def flow_run_skip(labels: Mapping[str, str], *, keys: Sequence[str]) -> Skip:
    """Why the flow-run id under `keys` (the first one set wins) gives no flow run.

    Called once `refs_from_labels` found no flow-run id (it leaves out one that is not a
    UUID), so the usual case costs the caller one comparison and nothing here.
    """
    for key in keys:
        if value := labels.get(key):
            detail = f"{key}={value!r} is not a UUID; no event without a flow run"
            return Skip("flow_run_id_not_uuid", detail)
    return Skip("flow_run_id_empty", f"{' / '.join(keys)} is empty; no event without a flow run")


class SkipLog:
    """Logs and counts each skipped object once, remembering a bounded number of them."""

    def __init__(
        self, *, source: str, metrics: Metrics, limit: int = SKIPPED_REMEMBERED_MAX
    ) -> None:
        self._source = source
        self._metrics = metrics
        self._limit = limit
        self._reported: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._reported)

    def report(self, key: str, skip: Skip, **context: object) -> None:
        """Log and count `skip` for the object `key`, unless it was already, for that reason."""
        if self._reported.get(key) == skip.reason:
            self._reported.move_to_end(key)
            return
        self._reported[key] = skip.reason
        self._reported.move_to_end(key)
        if len(self._reported) > self._limit:
            self._reported.popitem(last=False)
            self._metrics.bound_hits.labels("skipped_objects").inc()
        self._metrics.objects_skipped.labels(source=self._source, reason=skip.reason).inc()
        log.warning(
            "object_skipped",
            source=self._source,
            reason=skip.reason,
            detail=skip.detail,
            object=key,
            **context,
        )

    def forget(self, key: str) -> None:
        """The object is gone: its memory is freed before the bound would push it out."""
        self._reported.pop(key, None)
