"""The drift check: the project's transcription of the reference page, against the page.

`infra_observer.events.conformance.CATALOG` carries the facts of the infrastructure events
reference page that the project and its tests rely on. The page itself is not part of the
repository: when it is beside the checkout (`../shared/spec/infrastructure-events.txt` from
the repository root), `test_the_catalog_table_matches_the_reference_page` parses it and
compares it with the table; when it is absent, that one test is skipped and says where it
looked. Nothing else reads the page.

The page is plain text whose table cells run together without separators, e.g.
`kubernetes.namespaceKubernetes namespace` or `prefect.flow-run.{uuid}flow-runAlways (from
...)`. The small parser below splits them with what is known of each column: label keys are
dotted lower camelCase and descriptions start with a Capitalized or ALLCAPS word; roles come
from a known set; payload types are `string` or `integer`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from infra_observer.events.conformance import CATALOG, FamilySpec

PAGE = Path(__file__).resolve().parents[2].parent / "shared" / "spec" / "infrastructure-events.txt"

ROLES = ("block-type", "deployment", "flow-run", "work-pool", "worker", "flow")
_HEADING = re.compile(r"prefect\.[a-z0-9.{}\-]+")
_VARIANT_ROW = re.compile(r"(prefect\.[a-z0-9.\-]+)([A-Z].*)")
_LABEL_KEY = re.compile(r"[a-z][A-Za-z0-9]*(?:\.[a-z][A-Za-z0-9-]*)+")
_WORD_START = re.compile(r"(?:[A-Z][a-z]*|[A-Z]{2,})(?=[\s(),.]|$)")
_RELATED_ROW = re.compile(
    rf"(?P<pattern>.+?)(?P<role>{'|'.join(ROLES)})(?P<when>(?:Always|When)\b.*)"
)
_FIELD_ROW = re.compile(r"(?P<name>[a-z_]+)(?P<type>string|integer)(?P<description>[A-Z].*)")
_SAME_AS = re.compile(
    r"Same (?:resource and related resources )?as (prefect\.[a-z0-9.{}\-]*[a-z}])"
)
_WORKER_TYPE = re.compile(r"includes prefect\.worker-type: ([a-z]+)")
_ID_LABEL = "prefect.resource.id"


@dataclass
class PageFamily:
    name: str
    summary: str = ""
    variants: list[tuple[str, str]] = field(default_factory=list)
    resource_id: str | None = None
    labels: list[tuple[str, str]] = field(default_factory=list)
    related: list[tuple[str, str, str]] = field(default_factory=list)
    """(id pattern as written, role, when present)."""
    no_related: bool = False
    payload_kind: str | None = None
    """"none", "fields", "text" (described in prose), or None (no Payload section)."""
    payload: list[tuple[str, str, str]] = field(default_factory=list)
    payload_text: str = ""
    resource_same_as: str | None = None
    payload_same_as: str | None = None


# --- the parser ----------------------------------------------------------------------------


def split_label_row(row: str) -> tuple[str, str] | None:
    """`ecs.clusterArnECS cluster ARN (when available)` → (`ecs.clusterArn`, `ECS cluster ...`).

    The shortest key that is a dotted lower camelCase name ending in a lower-case letter and
    is followed by a Capitalized or ALLCAPS word; the id row's value starts with `prefect.`.
    """
    if row.startswith(_ID_LABEL) and row[len(_ID_LABEL) :].startswith("prefect."):
        return _ID_LABEL, row[len(_ID_LABEL) :]
    for end in range(1, len(row)):
        key, rest = row[:end], row[end:]
        if key[-1].islower() and _LABEL_KEY.fullmatch(key) and _WORD_START.match(rest):
            return key, rest
    return None


def _headings(lines: list[str]) -> list[int]:
    """Event names on a line of their own, followed by their "Emitted ..." summary."""
    found = []
    for index, line in enumerate(lines):
        following = next((later for later in lines[index + 1 :] if later), "")
        if _HEADING.fullmatch(line) and following.startswith("Emitted "):
            found.append(index)
    return found


def parse_page(text: str) -> dict[str, PageFamily]:
    lines = [line.strip() for line in text.splitlines()]
    starts = _headings(lines)
    families: dict[str, PageFamily] = {}
    for position, start in enumerate(starts):
        end = starts[position + 1] if position + 1 < len(starts) else len(lines)
        family = PageFamily(name=lines[start])
        _parse_section(family, [line for line in lines[start + 1 : end] if line])
        families[family.name] = family
    for family in families.values():
        _resolve_same_as(family, families)
    return families


_MODE_HEADINGS = {
    "Status variants": "variants-title",
    "Phase variants": "variants-title",
    "Event nameDescription": "variants",
    "Resource": "resource",
    "LabelDescription": "labels",
    "Related resources": "related-title",
    "Resource ID patternRoleWhen present": "related",
    "Payload": "payload",
    "FieldTypeDescription": "fields",
}


def _parse_section(family: PageFamily, lines: list[str]) -> None:
    family.summary = lines[0]
    if same := _SAME_AS.search(lines[0]):
        family.resource_same_as = same.group(1)
    mode = "prose"
    for line in lines[1:]:
        if line in _MODE_HEADINGS:
            mode = _MODE_HEADINGS[line]
            continue
        if mode in ("variants", "labels", "related", "fields") and _table_row(family, mode, line):
            continue
        if mode in ("variants", "labels", "related", "fields"):
            mode = "resource" if mode in ("labels", "related") else "prose"
        _prose(family, mode, line)


def _table_row(family: PageFamily, mode: str, line: str) -> bool:
    if mode == "variants" and (row := _VARIANT_ROW.fullmatch(line)):
        family.variants.append((row.group(1), row.group(2)))
    elif mode == "labels" and (label := split_label_row(line)):
        family.labels.append(label)
    elif mode == "related" and (related := _RELATED_ROW.fullmatch(line)):
        family.related.append(related.group("pattern", "role", "when"))
    elif mode == "fields" and (payload_field := _FIELD_ROW.fullmatch(line)):
        family.payload_kind = "fields"
        family.payload.append(payload_field.group("name", "type", "description"))
    else:
        return False
    return True


def _prose(family: PageFamily, mode: str, line: str) -> None:
    if "This event has no related resources." in line:
        family.no_related = True
    same = _SAME_AS.search(line)
    if mode == "resource" and same:
        family.resource_same_as = same.group(1)
    elif mode == "payload" and same:
        family.payload_same_as = same.group(1)
    elif mode == "payload" and line == "This event has no payload.":
        family.payload_kind = "none"
    elif mode == "payload" and line.startswith("The payload contains"):
        family.payload_kind, family.payload_text = "text", line


def _resolve_same_as(family: PageFamily, families: dict[str, PageFamily]) -> None:
    if family.resource_same_as is not None:
        origin = families[family.resource_same_as]
        family.resource_id, family.labels = origin.resource_id, list(origin.labels)
        family.related = [] if family.no_related else list(origin.related)
    if family.payload_same_as is not None:
        origin = families[family.payload_same_as]
        family.payload_kind, family.payload_text = origin.payload_kind, origin.payload_text
        family.payload = list(origin.payload)
    if family.resource_id is None:
        family.resource_id = dict(family.labels).get(_ID_LABEL)
    family.labels = [label for label in family.labels if label[0] != _ID_LABEL]


# --- the page's text, read the way the table records it ----------------------------------


def label_optional(description: str) -> bool:
    return "(when available)" in description


def label_only_for(description: str) -> tuple[str, ...]:
    only = re.search(r"\(only for (\w+) ", description)
    return () if only is None else (only.group(1),)


def worker_type_of(family: PageFamily, when: str) -> str:
    """The page names it for pods and tasks; Docker's worker is the `docker` worker."""
    named = _WORKER_TYPE.search(when)
    return named.group(1) if named else family.name.split(".")[1]


def related_id_pattern(family: PageFamily, pattern: str, role: str, when: str) -> str:
    """The page writes "Worker name" or "Worker resource" for the worker's id."""
    if role == "worker" and not pattern.startswith("prefect."):
        return f"prefect.worker.{worker_type_of(family, when)}.{{slug}}"
    return pattern


def payload_kind(family: PageFamily) -> str:
    """The table's payload kinds; prose other than the pull step's shows as itself."""
    if family.payload_kind == "fields":
        return "fields"
    if family.payload_kind == "text":
        text = family.payload_text
        pull_step = "fully qualified name" in text and "input parameters" in text
        return "pull-step" if pull_step else f"text: {text}"
    return "none"


Transcription = dict[str, object]


def from_page(family: PageFamily) -> Transcription:
    return {
        "summary": family.summary,
        "variants": family.variants,
        "resource_id": family.resource_id,
        "labels": [
            (key, description, not label_optional(description), label_only_for(description))
            for key, description in family.labels
        ],
        "related": [
            (
                role,
                related_id_pattern(family, pattern, role, when),
                when,
                when.startswith("Always"),
                worker_type_of(family, when) if role == "worker" else None,
            )
            for pattern, role, when in family.related
        ],
        "payload": payload_kind(family),
        "payload_fields": family.payload,
    }


def table_variants(spec: FamilySpec) -> list[tuple[str, str]]:
    """(event name, description); without variants `names` is the bare name, not a variant."""
    if not spec.variants:
        return []
    return [
        (name, description)
        for name, (_, description) in zip(spec.names, spec.variants, strict=True)
    ]


def from_table(spec: FamilySpec) -> Transcription:
    return {
        "summary": spec.summary,
        "variants": table_variants(spec),
        "resource_id": spec.resource_id,
        # The project's own labels are not on the page: compared is the page's part only.
        "labels": [
            (label.key, label.description, label.required, label.only_for)
            for label in spec.labels
            if not label.extension
        ],
        "related": [
            (related.role, related.id_pattern, related.when, related.always, related.worker_type)
            for related in spec.related
        ],
        "payload": spec.payload_kind,
        "payload_fields": [(f.name, f.type, f.description) for f in spec.payload],
    }


# --- the drift check ------------------------------------------------------------------------


def differences(page: dict[str, Transcription], table: dict[str, Transcription]) -> list[str]:
    """One line per row (or value) of a family where the table and the page disagree."""
    found = [f"{name}: on the page, not in the table" for name in page if name not in table]
    found += [f"{name}: in the table, not on the page" for name in table if name not in page]
    for name in sorted(page.keys() & table.keys()):
        for part, ours in table[name].items():
            found += [
                f"{name} {part}: {line}" for line in _part_differences(ours, page[name][part])
            ]
    return found


def _part_differences(ours: object, theirs: object) -> list[str]:
    if ours == theirs:
        return []
    if not (isinstance(ours, list) and isinstance(theirs, list)):
        return [f"the table has {ours!r}, the page has {theirs!r}"]
    found = [f"only the table has {row!r}" for row in ours if row not in theirs]
    found += [f"only the page has {row!r}" for row in theirs if row not in ours]
    return found or [f"the rows are in another order than the page's: {ours!r}"]


def test_the_catalog_table_matches_the_reference_page() -> None:
    if not PAGE.is_file():
        pytest.skip(
            f"reference page not found at {PAGE}: the drift check compares the catalog table "
            "with the page only when ../shared/spec/ is beside the checkout"
        )
    page = parse_page(PAGE.read_text(encoding="utf-8"))
    table = {spec.name: from_table(spec) for spec in CATALOG}
    drift = differences({name: from_page(family) for name, family in page.items()}, table)
    assert not drift, (
        "infra_observer.events.conformance.CATALOG differs from the page:\n" + "\n".join(drift)
    )


# --- the parser, on its own ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("prefect.resource.idprefect.kubernetes.pod.{uid}", ("prefect.resource.id", "prefect.")),
        ("kubernetes.namespaceKubernetes namespace", ("kubernetes.namespace", "Kubernetes")),
        ("ecs.taskArnFull ECS task ARN", ("ecs.taskArn", "Full")),
        ("ecs.clusterArnECS cluster ARN (when available)", ("ecs.clusterArn", "ECS")),
        ("ecs.taskDefinitionArnECS task definition ARN", ("ecs.taskDefinitionArn", "ECS")),
        ("prefect.resource.nameDescription of the transfer", ("prefect.resource.name", "Desc")),
        ("kubernetes.reasonEviction reason (only for evicted pods)", ("kubernetes.reason", "E")),
    ],
)
def test_label_rows_split_where_the_description_starts(row: str, expected: tuple[str, str]) -> None:
    split = split_label_row(row)
    assert split is not None
    assert split[0] == expected[0]
    assert split[1].startswith(expected[1])


SAMPLE = """\
prefect.thing.{status}

Emitted when a thing changes.
Status variants
Event nameDescription
prefect.thing.readyThing is ready
Resource
LabelDescription
prefect.resource.idprefect.thing.{uid}
thing.zoneZone of the thing (when available)
Related resources
Resource ID patternRoleWhen present
prefect.flow-run.{uuid}flow-runAlways (from prefect.io/flow-run-id thing label)
Worker nameworkerWhen a worker is named (includes prefect.worker-type: things)
Payload
FieldTypeDescription
countintegerHow many things

prefect.thing.gone

Emitted when a thing is gone. Same resource and related resources as prefect.thing.{status}.
"""


def test_the_parser_reads_tables_and_resolves_same_as() -> None:
    families = parse_page(SAMPLE)
    assert sorted(families) == ["prefect.thing.gone", "prefect.thing.{status}"]
    thing = from_page(families["prefect.thing.{status}"])
    assert thing["variants"] == [("prefect.thing.ready", "Thing is ready")]
    assert thing["resource_id"] == "prefect.thing.{uid}"
    assert thing["labels"] == [("thing.zone", "Zone of the thing (when available)", False, ())]
    assert thing["related"] == [
        (
            "flow-run",
            "prefect.flow-run.{uuid}",
            "Always (from prefect.io/flow-run-id thing label)",
            True,
            None,
        ),
        (
            "worker",
            "prefect.worker.things.{slug}",
            "When a worker is named (includes prefect.worker-type: things)",
            False,
            "things",
        ),
    ]
    assert (thing["payload"], thing["payload_fields"]) == (
        "fields",
        [("count", "integer", "How many things")],
    )
    gone = from_page(families["prefect.thing.gone"])
    assert (gone["resource_id"], gone["labels"], gone["related"], gone["payload"]) == (
        thing["resource_id"],
        thing["labels"],
        thing["related"],
        "none",
    )


def test_the_project_s_own_labels_are_few_and_named() -> None:
    """Labels the drift check skips, because the page does not have them: only these."""
    extensions = {label.key for spec in CATALOG for label in spec.labels if label.extension}
    assert extensions == {"kubernetes.diagnosis", "ecs.diagnosis"}
    assert all(not label.required for spec in CATALOG for label in spec.labels if label.extension)
