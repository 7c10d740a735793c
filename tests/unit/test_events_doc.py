"""docs/events.md is what scripts/gen-events-doc prints, and its examples conform."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from infra_observer.events.conformance import CATALOG, check_against_catalog
from infra_observer.events.model import limit_problems, parse_wire_event

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "events.md"
SCRIPT = REPO / "scripts" / "gen-events-doc"


def test_the_events_page_is_up_to_date() -> None:
    generated = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, check=True, timeout=60
    ).stdout.decode()
    assert DOC.read_text(encoding="utf-8") == generated, (
        "docs/events.md is stale: run .venv/bin/python scripts/gen-events-doc > docs/events.md"
    )


def test_every_family_has_a_section_and_every_example_conforms() -> None:
    text = DOC.read_text(encoding="utf-8")
    for family in CATALOG:
        assert f"### `{family.name}`" in text
        for name in family.names:
            assert f"`{name}`" in text
    examples = re.findall(r"```json\n(.*?)\n```", text, flags=re.DOTALL)
    assert len(examples) >= len(CATALOG)
    for example in examples:
        event = parse_wire_event(json.dumps(json.loads(example)))
        assert limit_problems(event) == []
        assert check_against_catalog(event) == []
