"""Which containers the Docker source follows: a flow-run label, and the configured filters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

FLOW_RUN_LABELS = ("io.prefect.flow-run-id", "prefect.io/flow-run-id")
"""Prefect's Docker worker writes the reverse-DNS form; the other one is accepted too."""


def is_selected(labels: Mapping[str, str], *, label_filters: Sequence[str]) -> bool:
    """A flow-run label in either form, and every extra `key` or `key=value` filter.

    Its presence selects, as the daemon's filter does: an unusable value is then skipped
    (and reported) by the translation, not silently passed over here.
    """
    if not any(key in labels for key in FLOW_RUN_LABELS):
        return False
    for spec in label_filters:
        key, sep, value = spec.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True
