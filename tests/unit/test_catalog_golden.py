"""Golden tests: the reference page's tables, parsed at run time, against the catalog builders.

The page (`../shared/spec/infrastructure-events.txt` beside the checkout) is plain text
whose table cells run together without separators, e.g. `kubernetes.namespaceKubernetes
namespace` or `prefect.flow-run.{uuid}flow-runAlways (from ...)`. The small parser below
splits them with what is known of each column: label keys are dotted lower camelCase and
descriptions start with a Capitalized or ALLCAPS word; roles come from a known set; payload
types are `string` or `integer`. Every builder is then run for every variant of every
family, with all optional inputs and with none, and each event is compared with the page.
"""

from __future__ import annotations

import ast
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

import pytest

from infra_observer.events import catalog
from infra_observer.events.conformance import CATALOG, FamilySpec, check_against_catalog
from infra_observer.events.model import Event, limit_problems, parse_wire_event

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


@pytest.fixture(scope="session")
def page() -> dict[str, PageFamily]:
    if not PAGE.is_file():
        pytest.fail(
            f"the reference page is missing: expected {PAGE} (the shared spec directory "
            "beside the checkout); these golden tests need it",
            pytrace=False,
        )
    return parse_page(PAGE.read_text(encoding="utf-8"))


# --- what the page says, per family --------------------------------------------------------


def label_applies(description: str, variant: str | None) -> bool:
    only = re.search(r"\(only for (\w+) ", description)
    return only is None or only.group(1) == variant


def label_optional(description: str) -> bool:
    return "(when available)" in description


def worker_type_of(family: PageFamily, when: str) -> str:
    """The page names it for pods and tasks; Docker's worker is the `docker` worker."""
    named = _WORKER_TYPE.search(when)
    return named.group(1) if named else family.name.split(".")[1]


def related_id_pattern(family: PageFamily, pattern: str, role: str, when: str) -> str:
    """The page writes "Worker name" or "Worker resource" for the worker's id."""
    if role == "worker" and not pattern.startswith("prefect."):
        return f"prefect.worker.{worker_type_of(family, when)}.{{slug}}"
    return pattern


_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_PLACEHOLDERS = {"uuid": _UUID, "slug": r"[a-z0-9]+(?:-[a-z0-9]+)*"}


def id_regex(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"\{([a-z-]+)\}", pattern)
    return re.compile(
        "".join(
            _PLACEHOLDERS.get(part, r"[A-Za-z0-9][A-Za-z0-9_.-]*") if odd else re.escape(part)
            for odd, part in ((index % 2 == 1, part) for index, part in enumerate(parts))
        )
    )


def concrete_variants(family: PageFamily) -> list[tuple[str, str | None]]:
    """(event name, variant): the variants table, the examples of a free `{type}`, or the name."""
    placeholder = re.search(r"\{[a-z]+\}", family.name)
    if placeholder is None:
        return [(family.name, None)]
    head, tail = family.name[: placeholder.start()], family.name[placeholder.end() :]
    if family.variants:
        names = [name for name, _ in family.variants]
    else:
        example = re.escape(head) + r"[a-z0-9-]+" + re.escape(tail)
        names = re.findall(example, family.summary)
    return [(name, name[len(head) : len(name) - len(tail)]) for name in names]


# --- the builders, with every optional input or with none ----------------------------------

OCCURRED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVENT_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
FLOW_RUN = "11111111-1111-4111-8111-111111111111"
FULL_REFS = catalog.FlowRunRefs(
    flow_run_id=FLOW_RUN,
    flow_run_name="crimson-otter",
    deployment_id="22222222-2222-4222-8222-222222222222",
    deployment_name="nightly",
    flow_id="33333333-3333-4333-8333-333333333333",
    flow_name="etl",
    work_pool_id="44444444-4444-4444-8444-444444444444",
    work_pool_name="k8s-pool",
    worker_name="Worker One",
)
STEP = {"prefect.deployments.steps.git_clone": {"repository": "https://example.com/r.git"}}

Builder = Callable[[str | None, bool], Event]


def _block(variant: str | None, full: bool) -> Event:
    assert variant is not None
    return catalog.block_loaded(
        block_type_slug=variant,
        block_document_id=uuid.UUID("55555555-5555-4555-8555-555555555555"),
        block_document_name="prod-webhook" if full else None,
        occurred=OCCURRED,
        event_id=EVENT_ID,
    )


def _pull_step(outcome: catalog.PullStepOutcome) -> Builder:
    def build(variant: str | None, full: bool) -> Event:
        return catalog.pull_step(
            outcome=outcome,
            flow_run_id=uuid.UUID(FLOW_RUN),
            deployment_id=uuid.UUID(FULL_REFS.deployment_id or "") if full else None,
            step=STEP,
            occurred=OCCURRED,
            event_id=EVENT_ID,
        )

    return build


def _transfer(completed: bool) -> Builder:
    def build(variant: str | None, full: bool) -> Event:
        return catalog.workspace_transfer(
            transfer_id=uuid.UUID("66666666-6666-4666-8666-666666666666"),
            description="local → cloud/my-workspace",
            source_profile="local",
            target_profile="cloud",
            source_url="http://127.0.0.1:4200/api",
            target_url="https://api.prefect.cloud/api/accounts/a/workspaces/w",
            total_resources=12,
            completed=catalog.TransferCounts(succeeded=10, failed=1, skipped=1)
            if completed
            else None,
            occurred=OCCURRED,
            event_id=EVENT_ID,
        )

    return build


def _docker(variant: str | None, full: bool) -> Event:
    status = next(s for s in catalog.CONTAINER_STATUSES if s == variant)
    return catalog.docker_container_event(
        status=status,
        container_id="4f6c1e2d9a",
        container_name="crimson-otter" if full else None,
        refs=FULL_REFS if full else catalog.FlowRunRefs(),
        worker_name="docker-worker-1",
        occurred=OCCURRED,
        event_id=EVENT_ID,
    )


def _docker_creation_failed(variant: str | None, full: bool) -> Event:
    return catalog.docker_container_creation_failed(
        container_id="crimson-otter",
        container_name="crimson-otter" if full else None,
        refs=FULL_REFS if full else catalog.FlowRunRefs(),
        worker_name="docker-worker-1",
        occurred=OCCURRED,
        event_id=EVENT_ID,
    )


def _pod(variant: str | None, full: bool) -> Event:
    phase = next(p for p in catalog.POD_PHASES if p == variant)
    return catalog.kubernetes_pod_event(
        phase=phase,
        pod_uid="a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        pod_name="crimson-otter-x7k2p",
        namespace="prefect",
        # The flow run is "Always" on the page: it is part of the minimal inputs.
        refs=FULL_REFS if full else catalog.FlowRunRefs(flow_run_id=FLOW_RUN),
        occurred=OCCURRED,
        event_id=EVENT_ID,
        eviction_reason="Evicted" if phase == "evicted" else None,
    )


def _ecs(variant: str | None, full: bool) -> Event:
    status = next(s for s in catalog.ECS_TASK_STATUSES if s == variant)
    return catalog.ecs_task_event(
        status=status,
        task_arn="arn:aws:ecs:us-east-1:123456789012:task/prefect/0123456789abcdef0123456789abcdef",
        cluster_arn="arn:aws:ecs:us-east-1:123456789012:cluster/prefect" if full else None,
        task_definition_arn="arn:aws:ecs:us-east-1:123456789012:task-definition/flow:3"
        if full
        else None,
        refs=FULL_REFS if full else catalog.FlowRunRefs(flow_run_id=FLOW_RUN),
        occurred=OCCURRED,
        event_id=EVENT_ID,
    )


BUILDERS: dict[str, Builder] = {
    "prefect.block.{type}.loaded": _block,
    "prefect.flow-run.pull-step.executed": _pull_step("executed"),
    "prefect.flow-run.pull-step.failed": _pull_step("failed"),
    "prefect.workspace.transfer.started": _transfer(completed=False),
    "prefect.workspace.transfer.completed": _transfer(completed=True),
    "prefect.docker.container.{status}": _docker,
    "prefect.docker.container.creation-failed": _docker_creation_failed,
    "prefect.kubernetes.pod.{phase}": _pod,
    "prefect.ecs.task.{status}": _ecs,
}


# --- the page as parsed: guards against a parser that finds nothing -----------------------


def test_the_page_parses_into_every_family(page: dict[str, PageFamily]) -> None:
    assert sorted(page) == sorted(BUILDERS)


# (variants, labels besides the id, related resources, payload fields) per family
EXPECTED_COUNTS = {
    "prefect.block.{type}.loaded": (0, 1, 1, 0),
    "prefect.flow-run.pull-step.executed": (0, 0, 1, 0),
    "prefect.flow-run.pull-step.failed": (0, 0, 1, 0),
    "prefect.workspace.transfer.started": (0, 1, 0, 5),
    "prefect.workspace.transfer.completed": (0, 1, 0, 8),
    "prefect.docker.container.{status}": (7, 1, 5, 0),
    "prefect.docker.container.creation-failed": (0, 1, 5, 0),
    "prefect.kubernetes.pod.{phase}": (6, 3, 5, 0),
    "prefect.ecs.task.{status}": (9, 3, 5, 0),
}


@pytest.mark.parametrize(("name", "counts"), EXPECTED_COUNTS.items())
def test_the_page_yields_the_expected_counts(
    page: dict[str, PageFamily], name: str, counts: tuple[int, int, int, int]
) -> None:
    family = page[name]
    found = (len(family.variants), len(family.labels), len(family.related), len(family.payload))
    assert found == counts
    assert family.resource_id is not None
    assert family.resource_id.startswith("prefect.")


def test_the_page_gives_block_type_examples(page: dict[str, PageFamily]) -> None:
    assert concrete_variants(page["prefect.block.{type}.loaded"]) == [
        ("prefect.block.slack-webhook.loaded", "slack-webhook"),
        ("prefect.block.s3-bucket.loaded", "s3-bucket"),
    ]


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


def test_payload_field_types_are_known(page: dict[str, PageFamily]) -> None:
    types = {kind for family in page.values() for _, kind, _ in family.payload}
    assert types == {"string", "integer"}


# --- every builder, every variant, against the page ----------------------------------------


def _cases(page: dict[str, PageFamily]) -> Iterator[tuple[PageFamily, str, str | None, bool]]:
    for family in page.values():
        for name, variant in concrete_variants(family):
            for full in (True, False):
                yield family, name, variant, full


@pytest.mark.parametrize("family_name", sorted(BUILDERS))
def test_builders_match_the_page(page: dict[str, PageFamily], family_name: str) -> None:
    family = page[family_name]
    cases = [case for case in _cases(page) if case[0] is family]
    assert cases, f"no variant of {family_name} was found on the page"
    for _, name, variant, full in cases:
        event = BUILDERS[family_name](variant, full)
        where = f"{name} ({'all inputs' if full else 'minimal inputs'})"
        assert event.event == name, where
        _assert_resource(family, event, variant=variant, full=full, where=where)
        _assert_related(family, event, full=full, where=where)
        _assert_payload(family, event, where=where)
        assert limit_problems(event) == [], where
        assert check_against_catalog(event) == [], where
        # What `validate` reads back: the same event through its JSON form.
        assert check_against_catalog(parse_wire_event(event.to_json())) == [], where


def _assert_resource(
    family: PageFamily, event: Event, *, variant: str | None, full: bool, where: str
) -> None:
    assert family.resource_id is not None
    assert id_regex(family.resource_id).fullmatch(event.resource_id), where
    expected = {_ID_LABEL} | {
        key
        for key, description in family.labels
        if label_applies(description, variant) and (full or not label_optional(description))
    }
    assert set(event.resource) == expected, where
    assert all(isinstance(value, str) and value for value in event.resource.values()), where


def _assert_related(family: PageFamily, event: Event, *, full: bool, where: str) -> None:
    documented = {role: (pattern, when) for pattern, role, when in family.related}
    expected_roles = {
        role for role, (_, when) in documented.items() if full or when.startswith("Always")
    }
    roles = [labels.get("prefect.resource.role") for labels in event.related]
    assert sorted(r for r in roles if r) == sorted(expected_roles), where
    for labels in event.related:
        role = labels["prefect.resource.role"]
        pattern, when = documented[role]
        id_pattern = related_id_pattern(family, pattern, role, when)
        assert id_regex(id_pattern).fullmatch(labels["prefect.resource.id"]), (where, role)
        assert all(isinstance(value, str) and value for value in labels.values()), where
        if role == "worker":
            assert labels["prefect.worker-type"] == worker_type_of(family, when), where


def _assert_payload(family: PageFamily, event: Event, *, where: str) -> None:
    if family.payload_kind in ("none", None):
        # No Payload section (creation-failed shares only resource and related): none.
        assert event.payload == {}, where
    elif family.payload_kind == "fields":
        types = {"string": str, "integer": int}
        assert [name for name, _, _ in family.payload] == list(event.payload), where
        for name, kind, _ in family.payload:
            value = event.payload[name]
            assert isinstance(value, types[kind]), (where, name)
            assert not isinstance(value, bool), (where, name)
    else:
        # "the step's fully qualified name and its input parameters as defined in prefect.yaml"
        assert "fully qualified name" in family.payload_text
        assert "input parameters" in family.payload_text
        ((qualified_name, inputs),) = STEP.items()
        assert event.payload["qualified_name"] == qualified_name, where
        assert event.payload["inputs"] == inputs, where


# --- the validator's transcription of the page --------------------------------------------


@pytest.mark.parametrize("spec", CATALOG, ids=lambda spec: spec.name)
def test_the_conformance_table_transcribes_the_page(
    page: dict[str, PageFamily], spec: FamilySpec
) -> None:
    family = page[spec.name]
    assert spec.summary == family.summary
    descriptions = [description for _, description in spec.variants]
    assert list(zip(spec.names, descriptions, strict=False)) == family.variants
    assert spec.resource_id == family.resource_id
    assert [(label.key, label.description) for label in spec.labels] == family.labels
    for label in spec.labels:
        assert label.required == (not label_optional(label.description))
        assert (not label.only_for) == label_applies(label.description, None)
    assert [
        (related.role, related.id_pattern, related.when, related.always, related.worker_type)
        for related in spec.related
    ] == [
        (
            role,
            related_id_pattern(family, pattern, role, when),
            when,
            when.startswith("Always"),
            worker_type_of(family, when) if role == "worker" else None,
        )
        for pattern, role, when in family.related
    ]
    expected_kind = {"fields": "fields", "text": "pull-step"}.get(family.payload_kind or "", "none")
    assert spec.payload_kind == expected_kind
    assert [(f.name, f.type, f.description) for f in spec.payload] == family.payload


def test_the_statuses_of_the_builders_are_the_pages(page: dict[str, PageFamily]) -> None:
    def variants(name: str) -> list[str | None]:
        return [variant for _, variant in concrete_variants(page[name])]

    assert variants("prefect.docker.container.{status}") == list(get_args(catalog.ContainerStatus))
    assert variants("prefect.kubernetes.pod.{phase}") == list(get_args(catalog.PodPhase))
    assert variants("prefect.ecs.task.{status}") == list(get_args(catalog.EcsTaskStatus))


# --- the builders are the only way to an event ---------------------------------------------

SRC = Path(__file__).resolve().parents[2] / "src" / "infra_observer"


def _constructs_events(path: Path) -> list[int]:
    """Lines of `path` that call the `Event` class of the model directly."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "infra_observer.events.model"
        for alias in node.names
        if alias.name == "Event"
    }
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names
    ]


def test_sources_and_commands_build_events_only_through_the_catalog() -> None:
    modules = [*sorted((SRC / "sources").rglob("*.py")), *sorted((SRC / "commands").rglob("*.py"))]
    assert modules
    offenders = {
        str(path.relative_to(SRC)): lines for path in modules if (lines := _constructs_events(path))
    }
    assert offenders == {}, "build events with infra_observer.events.catalog, not Event(...)"
