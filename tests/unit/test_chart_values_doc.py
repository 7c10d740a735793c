"""The chart README's values table is what scripts/gen-chart-values-doc makes of values.yaml."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "infra-observer"
SCRIPT = REPO / "scripts" / "gen-chart-values-doc"


def generator() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("gen_chart_values_doc", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def leaf_paths(values: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        if isinstance(value, dict) and value:
            yield from leaf_paths(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_the_chart_readme_values_table_is_up_to_date() -> None:
    generated = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, check=True, timeout=60
    ).stdout.decode()
    assert (CHART / "README.md").read_text(encoding="utf-8") == generated, (
        "helm/infra-observer/README.md is stale: run "
        ".venv/bin/python scripts/gen-chart-values-doc --write"
    )


def test_every_value_has_a_row_with_its_default() -> None:
    table = generator().values_table(CHART)
    rows = {}
    for line in table.splitlines()[2:]:
        key, kind, default, _ = (cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1])
        if kind != "section":  # a section's own comment, not a value
            rows[key.strip("`")] = default
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in leaf_paths(values):
        covering = [row for row in rows if path == row or path.startswith(f"{row}.")]
        assert covering, f"{path} has no row in the values table"
    assert rows["revisionHistoryLimit"] == "`3`"
    assert rows["podSecurityContext"].startswith('`{"runAsNonRoot": true')


def test_comments_attach_to_the_key_below_them() -> None:
    text = (
        "# A heading, not attached: a blank line follows.\n"
        "\n"
        "# The section.\n"
        "outer:\n"
        "  # The first value,\n"
        "  # over two lines.\n"
        "  first: 1\n"
        "  list:\n"
        "    - a\n"
        "  # After a list item.\n"
        "  second: {}\n"
        "top: x\n"
    )
    assert generator().key_comments(text) == {
        "outer": "The section.",
        "outer.first": "The first value, over two lines.",
        "outer.second": "After a list item.",
    }


def test_types_come_from_the_schema() -> None:
    type_of = generator().type_of
    assert type_of({"enum": ["a", "b"]}, "a") == 'one of "a", "b"'
    assert type_of({"anyOf": [{"type": "integer"}, {"type": "string"}]}, "") == (
        "integer or string"
    )
    assert type_of({}, []) == "array"
    assert type_of({"type": "object"}, {}) == "object"
