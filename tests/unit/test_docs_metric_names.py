"""The documentation names counters as Prometheus scrapes them: with their `_total`."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from infra_observer.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted(
    [
        REPO / "README.md",
        *(REPO / "docs").rglob("*.md"),
        *(REPO / "helm").rglob("*.md"),
        *(REPO / "helm").rglob("NOTES.txt"),
        *(REPO / "deploy").rglob("*.md"),
    ]
)


def counter_names() -> list[str]:
    registry = CollectorRegistry()
    Metrics(registry)
    # A counter's family is named without the suffix that every scraped sample carries.
    return sorted(family.name for family in registry.collect() if family.type == "counter")


def test_counters_are_named_with_their_total_suffix() -> None:
    names = counter_names()
    assert "infra_observer_events_undelivered" in names
    pattern = re.compile(r"\b(" + "|".join(names) + r")\b(?!_total)")
    wrong = [
        f"{path.relative_to(REPO)}:{number}: {match.group(1)}"
        for path in DOCUMENTS
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        for match in pattern.finditer(line)
    ]
    assert wrong == [], "name these counters with _total: " + "; ".join(wrong)
