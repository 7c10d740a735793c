"""Golden tests: every catalog builder against the project's transcription of the page.

`infra_observer.events.conformance.CATALOG` holds the infrastructure events reference page as
the project's own data: event names and variants, resource labels, related resources (id
pattern, role, when present) and payload keys. Every builder is run for every variant of
every family, with all optional inputs and with none, and each event is compared with its
family's entry. These tests need nothing beside the checkout; the one test that reads the
page itself, to keep the table in step with it, is tests/unit/test_reference_page.py.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra_observer.events import catalog
from infra_observer.events.conformance import (
    CATALOG,
    WORKER_TYPE,
    FamilySpec,
    check_against_catalog,
)
from infra_observer.events.model import (
    RESOURCE_ID,
    RESOURCE_ROLE,
    Event,
    limit_problems,
    parse_wire_event,
)
from infra_observer.events.related import FlowRunRefs
from infra_observer.sources.docker.catalog import (
    CONTAINER_STATUSES,
    docker_container_creation_failed,
    docker_container_event,
)
from infra_observer.sources.ecs.catalog import ECS_TASK_STATUSES, ecs_task_event
from infra_observer.sources.kubernetes.catalog import POD_PHASES, kubernetes_pod_event

# The test's own reading of the id patterns, stricter than the validator's (lower-case uuids).
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


def concrete_variants(spec: FamilySpec) -> list[tuple[str, str | None]]:
    """(event name, variant): the fixed variants, the examples of a free `{type}`, or the name."""
    placeholder = re.search(r"\{[a-z]+\}", spec.name)
    if placeholder is None:
        return [(spec.name, None)]
    if spec.variants:
        return [
            (name, variant) for name, (variant, _) in zip(spec.names, spec.variants, strict=True)
        ]
    head, tail = spec.name[: placeholder.start()], spec.name[placeholder.end() :]
    names = re.findall(re.escape(head) + r"[a-z0-9-]+" + re.escape(tail), spec.summary)
    return [(name, name[len(head) : len(name) - len(tail)]) for name in names]


# --- the builders, with every optional input or with none ----------------------------------

OCCURRED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVENT_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
FLOW_RUN = "11111111-1111-4111-8111-111111111111"
FULL_REFS = FlowRunRefs(
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
            catalog.Transfer(
                transfer_id=uuid.UUID("66666666-6666-4666-8666-666666666666"),
                description="local → cloud/my-workspace",
                source_profile="local",
                target_profile="cloud",
                source_url="http://127.0.0.1:4200/api",
                target_url="https://api.prefect.cloud/api/accounts/a/workspaces/w",
                total_resources=12,
            ),
            completed=catalog.TransferCounts(succeeded=10, failed=1, skipped=1)
            if completed
            else None,
            occurred=OCCURRED,
            event_id=EVENT_ID,
        )

    return build


def _docker(variant: str | None, full: bool) -> Event:
    status = next(s for s in CONTAINER_STATUSES if s == variant)
    return docker_container_event(
        status=status,
        container_id="4f6c1e2d9a",
        container_name="crimson-otter" if full else None,
        refs=FULL_REFS if full else FlowRunRefs(),
        worker_name="docker-worker-1",
        occurred=OCCURRED,
        event_id=EVENT_ID,
    )


def _docker_creation_failed(variant: str | None, full: bool) -> Event:
    return docker_container_creation_failed(
        container_id="crimson-otter",
        container_name="crimson-otter" if full else None,
        refs=FULL_REFS if full else FlowRunRefs(),
        worker_name="docker-worker-1",
        occurred=OCCURRED,
        event_id=EVENT_ID,
    )


def _pod(variant: str | None, full: bool) -> Event:
    phase = next(p for p in POD_PHASES if p == variant)
    return kubernetes_pod_event(
        phase=phase,
        pod_uid="a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        pod_name="crimson-otter-x7k2p",
        namespace="prefect",
        # The flow run is "Always" for pods: it is part of the minimal inputs.
        refs=FULL_REFS if full else FlowRunRefs(flow_run_id=FLOW_RUN),
        occurred=OCCURRED,
        event_id=EVENT_ID,
        eviction_reason="Evicted" if phase == "evicted" else None,
        diagnosis=("Evicted" if phase == "evicted" else "OOMKilled") if full else None,
    )


def _ecs(variant: str | None, full: bool) -> Event:
    status = next(s for s in ECS_TASK_STATUSES if s == variant)
    return ecs_task_event(
        status=status,
        task_arn="arn:aws:ecs:us-east-1:123456789012:task/prefect/0123456789abcdef0123456789abcdef",
        cluster_arn="arn:aws:ecs:us-east-1:123456789012:cluster/prefect" if full else None,
        task_definition_arn="arn:aws:ecs:us-east-1:123456789012:task-definition/flow:3"
        if full
        else None,
        refs=FULL_REFS if full else FlowRunRefs(flow_run_id=FLOW_RUN),
        occurred=OCCURRED,
        event_id=EVENT_ID,
        diagnosis="OutOfMemoryError" if full else None,
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


# --- every builder, every variant, against the catalog table -------------------------------

FAMILIES = {spec.name: spec for spec in CATALOG}


def test_every_family_of_the_table_has_a_builder() -> None:
    assert sorted(BUILDERS) == sorted(FAMILIES)


def test_a_free_block_type_takes_the_examples_of_the_summary() -> None:
    assert concrete_variants(FAMILIES["prefect.block.{type}.loaded"]) == [
        ("prefect.block.slack-webhook.loaded", "slack-webhook"),
        ("prefect.block.s3-bucket.loaded", "s3-bucket"),
    ]


@pytest.mark.parametrize("family_name", sorted(BUILDERS))
def test_builders_match_the_table(family_name: str) -> None:
    spec = FAMILIES[family_name]
    cases = [
        (name, variant, full) for name, variant in concrete_variants(spec) for full in (True, False)
    ]
    assert cases, f"no variant of {family_name} in the table"
    for name, variant, full in cases:
        event = BUILDERS[family_name](variant, full)
        where = f"{name} ({'all inputs' if full else 'minimal inputs'})"
        assert event.event == name, where
        _assert_resource(spec, event, variant=variant, full=full, where=where)
        _assert_related(spec, event, full=full, where=where)
        _assert_payload(spec, event, where=where)
        assert limit_problems(event) == [], where
        assert check_against_catalog(event) == [], where
        # What `validate` reads back: the same event through its JSON form.
        assert check_against_catalog(parse_wire_event(event.to_json())) == [], where


def _assert_resource(
    spec: FamilySpec, event: Event, *, variant: str | None, full: bool, where: str
) -> None:
    assert id_regex(spec.resource_id).fullmatch(event.resource_id), where
    expected = {RESOURCE_ID} | {
        label.key
        for label in spec.labels
        if (not label.only_for or variant in label.only_for) and (full or label.required)
    }
    assert set(event.resource) == expected, where
    assert all(isinstance(value, str) and value for value in event.resource.values()), where


def _assert_related(spec: FamilySpec, event: Event, *, full: bool, where: str) -> None:
    documented = {related.role: related for related in spec.related}
    expected_roles = {related.role for related in spec.related if full or related.always}
    roles = [labels.get(RESOURCE_ROLE) for labels in event.related]
    assert sorted(r for r in roles if r) == sorted(expected_roles), where
    for labels in event.related:
        related = documented[labels[RESOURCE_ROLE]]
        assert id_regex(related.id_pattern).fullmatch(labels[RESOURCE_ID]), (where, related.role)
        assert all(isinstance(value, str) and value for value in labels.values()), where
        assert labels.get(WORKER_TYPE) == related.worker_type, (where, related.role)


def _assert_payload(spec: FamilySpec, event: Event, *, where: str) -> None:
    if spec.payload_kind == "none":
        assert event.payload == {}, where
    elif spec.payload_kind == "fields":
        types = {"string": str, "integer": int}
        assert [payload_field.name for payload_field in spec.payload] == list(event.payload), where
        for payload_field in spec.payload:
            value = event.payload[payload_field.name]
            assert isinstance(value, types[payload_field.type]), (where, payload_field.name)
            assert not isinstance(value, bool), (where, payload_field.name)
    else:
        # The step's fully qualified name and its input parameters as in prefect.yaml.
        ((qualified_name, inputs),) = STEP.items()
        assert event.payload["qualified_name"] == qualified_name, where
        assert event.payload["inputs"] == inputs, where


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
    """Each source's `catalog.py` holds its builders; nothing else in a source or a command
    calls `Event(...)`."""
    source_modules = sorted((SRC / "sources").rglob("*.py"))
    catalogs = [path for path in source_modules if path.name == "catalog.py"]
    assert sorted(path.parent.name for path in catalogs) == ["docker", "ecs", "kubernetes"]
    modules = [
        *(path for path in source_modules if path not in catalogs),
        *sorted((SRC / "commands").rglob("*.py")),
    ]
    assert modules
    offenders = {
        str(path.relative_to(SRC)): lines for path in modules if (lines := _constructs_events(path))
    }
    assert offenders == {}, (
        "build events with infra_observer.events.catalog or the source's own catalog "
        "(infra_observer.sources.<name>.catalog), not Event(...)"
    )


@pytest.mark.parametrize(
    ("family_name", "names"),
    [
        ("prefect.docker.container.{status}", CONTAINER_STATUSES),
        ("prefect.kubernetes.pod.{phase}", POD_PHASES),
        ("prefect.ecs.task.{status}", ECS_TASK_STATUSES),
    ],
)
def test_each_source_builder_takes_exactly_the_variants_of_the_table(
    family_name: str, names: tuple[str, ...]
) -> None:
    """The table's variants and the type of the source builder's argument are one list."""
    assert tuple(variant for variant, _ in FAMILIES[family_name].variants) == names


def test_the_catalogs_load_no_watcher() -> None:
    """`infra-observer emit` reads every source's catalog at each start of the CLI: importing
    them (through the CLI, as the daemon does) loads no watcher and no HTTP client."""
    probe = "import sys, infra_observer.cli\nprint(' '.join(sorted(sys.modules)))\n"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, check=True, timeout=60
        ).stdout.split()
    )
    assert {
        b"infra_observer.sources.docker.catalog",
        b"infra_observer.sources.ecs.catalog",
        b"infra_observer.sources.kubernetes.catalog",
    } <= loaded
    watchers = sorted(
        name.decode()
        for name in loaded
        if name.startswith(b"infra_observer.sources.")
        and name.count(b".") == 3
        and not name.endswith((b".catalog", b".base", b".skips"))
    )
    assert watchers == []
    assert not loaded & {b"httpx", b"httpcore", b"kubernetes_asyncio", b"aiobotocore"}
