"""`infra-observer config`: every setting, its effective value, and where that value came from.

The settings read the environment and nothing else (no dotenv file, no secrets directory),
so each value is either its default or what one variable set. Secrets are shown as `***`.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Mapping

import orjson

from infra_observer.config import Settings, env_name, is_secret, redact_credentials

Shown = bool | int | float | str | list[str] | None

DEFAULT = "default"
ENVIRONMENT = "environment"
SECRET = "***"
UNSET = "(unset)"
EMPTY = "(empty)"
HEADINGS = ("SECTION", "VARIABLE", "VALUE", "SOURCE")


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """One setting: `value` as JSON would hold it, secrets and URL credentials masked."""

    section: str
    variable: str
    value: Shown
    source: str


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "config",
        help="print the effective configuration and where each setting came from",
        description="Print every setting: its section, variable, effective value, and source "
        "(`default`, or `environment` when its variable is set). Secrets, and credentials "
        "written into a URL, are shown as ***. WARN lines on stderr name unknown "
        "INFRA_OBSERVER_* variables and risky credentials, as `check` does. Exits 2, as `run` "
        "does, when the configuration is invalid.",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="a JSON array of objects (section, variable, value, source) instead of a table; "
        "an unset setting's value is null",
    )
    parser.add_argument(
        "--changed",
        action="store_true",
        help="only the settings that the environment sets, leaving out those at their default",
    )


def rows(settings: Settings, environ: Mapping[str, str]) -> list[Row]:
    """Every setting of `settings`, loaded from `environ`, in the reference page's order."""
    # The settings read their variables in any case; of two spellings, the later one counts.
    spelled = {name.lower(): name for name in environ}
    found = []
    for part in dataclasses.fields(settings):
        values = getattr(settings, part.name)
        section = type(values)
        for field in section.model_fields:
            variable = env_name(section, field)
            value = getattr(values, field)
            found.append(
                Row(
                    section=part.name,
                    variable=variable,
                    value=_shown(value, secret=is_secret(section, field)),
                    source=_source(variable, spelled.get(variable.lower())),
                )
            )
    return found


def _source(variable: str, spelled: str | None) -> str:
    if spelled is None:
        return DEFAULT
    # Named only when written otherwise, so that the variable column reads as it was set.
    return ENVIRONMENT if spelled == variable else f"{ENVIRONMENT} ({spelled})"


def _shown(value: object, *, secret: bool) -> Shown:
    if value is None:
        return None  # an unset secret says so: nothing is hidden
    if secret:
        return SECRET
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, list):
        return [redact_credentials(str(item)) for item in value]
    return redact_credentials(str(value))


def changed(found: Iterable[Row]) -> list[Row]:
    return [row for row in found if row.source != DEFAULT]


def as_json(found: Iterable[Row]) -> str:
    return orjson.dumps(
        [dataclasses.asdict(row) for row in found], option=orjson.OPT_INDENT_2
    ).decode()


def as_table(found: Iterable[Row]) -> str:
    """Aligned columns under a heading line; the last one unpadded, so no line ends in blanks."""
    lines = [
        HEADINGS,
        *((row.section, row.variable, _text(row.value), row.source) for row in found),
    ]
    widths = [max(len(line[column]) for line in lines) for column in range(len(HEADINGS) - 1)]
    return "\n".join(
        "  ".join(
            [*(cell.ljust(width) for cell, width in zip(line, widths, strict=False)), line[-1]]
        )
        for line in lines
    )


def _text(value: Shown) -> str:
    """A value as one table cell: as it would be written in the variable, or a placeholder."""
    if value is None:
        return UNSET
    if isinstance(value, bool):
        return "true" if value else "false"
    text = ",".join(value) if isinstance(value, list) else str(value)
    if not text:
        return EMPTY
    # A line break or other control character would break the table: shown escaped.
    return text if text.isprintable() else repr(text)
