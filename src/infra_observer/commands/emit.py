"""`infra-observer emit FAMILY ...`: build one catalog event from flags and deliver it.

One concern, however long: the `emit` command, with the flags of every family it builds.

For what no watcher can see (a pull step, a block load, a workspace transfer, a container
that could not be created) and for testing automations. The event goes through the same
emitter and sink as the daemon's: the events API when PREFECT_API_URL is set, else one JSON
line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import structlog
from prometheus_client import CollectorRegistry

from infra_observer import app
from infra_observer.commands import CommandInputError
from infra_observer.config import Settings
from infra_observer.emitter import Emitter, EventsApiSink
from infra_observer.emitter.stored import FILTER_PATH, stored_ids
from infra_observer.errors import DeliveryError
from infra_observer.events import catalog
from infra_observer.events.handoff import Outcome
from infra_observer.events.model import Event
from infra_observer.events.related import FlowRunRefs
from infra_observer.metrics import Metrics
from infra_observer.prefect_api.client import PrefectApi
from infra_observer.sources.docker.catalog import (
    CONTAINER_STATUSES,
    docker_container_creation_failed,
    docker_container_event,
)
from infra_observer.sources.ecs.catalog import ECS_TASK_STATUSES, ecs_task_event
from infra_observer.sources.kubernetes.catalog import POD_PHASES, kubernetes_pod_event

log = structlog.get_logger(__name__)

SOURCE = "cli"
FLOW_RUN_ENV = "PREFECT__FLOW_RUN_ID"
_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_EXAMPLE_UUID = "1b4e28ba-2fa1-41d2-883f-0000c0f8a4e6"


# --- argument types: each names the value and what was expected ----------------------------


def uuid_arg(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a UUID (expected e.g. {_EXAMPLE_UUID})"
        ) from None


def timestamp_arg(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an RFC 3339 timestamp (expected e.g. 2026-01-31T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{value!r} has no time zone; add one, e.g. {value}Z for UTC"
        )
    return moment.astimezone(UTC)


def count_arg(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if count < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; counts start at 0")
    return count


def seconds_arg(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return seconds


def slug_arg(value: str) -> str:
    if not _SLUG.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a slug (lower-case words joined by dashes, e.g. s3-bucket)"
        )
    return value


def text_arg(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def step_arg(value: str) -> Mapping[str, Any]:
    """A pull step as in prefect.yaml, as JSON: its fully qualified name mapped to its inputs."""
    hint = 'expected e.g. {"prefect.deployments.steps.git_clone": {"repository": "..."}}'
    try:
        step = json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}); {hint}") from None
    if not isinstance(step, dict) or len(step) != 1:
        raise argparse.ArgumentTypeError(
            f"must be a JSON object with exactly one key, the step's name; {hint}"
        )
    ((name, inputs),) = step.items()
    if not name.strip():
        raise argparse.ArgumentTypeError(f"the step's fully qualified name is empty; {hint}")
    if inputs is None:
        return {name: {}}
    if not isinstance(inputs, dict):
        raise argparse.ArgumentTypeError(f"the inputs of {name} must be a JSON object; {hint}")
    return step


# --- the families -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Common:
    event_id: uuid.UUID
    occurred: datetime


@dataclass(frozen=True, slots=True)
class _Family:
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    build: Callable[[argparse.Namespace, _Common], Event]


def _refs_flags(
    parser: argparse.ArgumentParser,
    *,
    flow_run_required: bool,
    worker_required: bool = False,
    worker_help: str = "the worker's name (prefect.io/worker-name)",
) -> None:
    group = parser.add_argument_group("the flow run's objects (related resources)")
    group.add_argument(
        "--flow-run-id",
        type=uuid_arg,
        required=flow_run_required,
        help="the flow run" + (" (required)" if flow_run_required else ""),
    )
    group.add_argument("--flow-run-name", type=text_arg)
    group.add_argument("--deployment-id", type=uuid_arg)
    group.add_argument("--deployment-name", type=text_arg)
    group.add_argument("--flow-id", type=uuid_arg)
    group.add_argument("--flow-name", type=text_arg)
    group.add_argument("--work-pool-id", type=uuid_arg)
    group.add_argument("--work-pool-name", type=text_arg)
    group.add_argument("--worker-name", type=text_arg, required=worker_required, help=worker_help)


def _refs(args: argparse.Namespace, *, worker: bool = True) -> FlowRunRefs:
    def text(value: object) -> str | None:
        return None if value is None else str(value)

    return FlowRunRefs(
        flow_run_id=text(args.flow_run_id),
        flow_run_name=args.flow_run_name,
        deployment_id=text(args.deployment_id),
        deployment_name=args.deployment_name,
        flow_id=text(args.flow_id),
        flow_name=args.flow_name,
        work_pool_id=text(args.work_pool_id),
        work_pool_name=args.work_pool_name,
        worker_name=args.worker_name if worker else None,
    )


def _configure_block(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--block-type", type=slug_arg, required=True, help="block type slug, e.g. s3-bucket"
    )
    parser.add_argument("--block-document-id", type=uuid_arg, required=True)
    parser.add_argument(
        "--block-document-name", type=text_arg, help="default: the block document's id"
    )


def _build_block(args: argparse.Namespace, common: _Common) -> Event:
    return catalog.block_loaded(
        block_type_slug=args.block_type,
        block_document_id=args.block_document_id,
        block_document_name=args.block_document_name,
        occurred=common.occurred,
        event_id=common.event_id,
    )


def _configure_pull_step(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--outcome", choices=("executed", "failed"), required=True)
    from_env = os.environ.get(FLOW_RUN_ENV) or None
    parser.add_argument(
        "--flow-run-id",
        type=uuid_arg,
        default=from_env,
        required=from_env is None,
        help=f"the flow run (default: ${FLOW_RUN_ENV}, set inside a flow run)",
    )
    parser.add_argument("--deployment-id", type=uuid_arg, help="the deployment, when known")
    parser.add_argument(
        "--step-json",
        type=step_arg,
        required=True,
        help='the step as in prefect.yaml, as JSON: {"<fully qualified name>": {<inputs>}}; '
        "keep secrets as their template strings",
    )
    parser.add_argument(
        "--step-index", type=count_arg, default=0, help="position among the pull steps (0)"
    )


def _build_pull_step(args: argparse.Namespace, common: _Common) -> Event:
    return catalog.pull_step(
        outcome=args.outcome,
        flow_run_id=args.flow_run_id,
        deployment_id=args.deployment_id,
        step=args.step_json,
        step_index=args.step_index,
        occurred=common.occurred,
        event_id=common.event_id,
    )


def _configure_transfer(*, completed: bool) -> Callable[[argparse.ArgumentParser], None]:
    def configure(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--transfer-id", type=uuid_arg, required=True, help="the same for started and completed"
        )
        parser.add_argument(
            "--description",
            type=text_arg,
            required=True,
            help="the transfer's direction, e.g. 'local → cloud/my-workspace'",
        )
        for flag in ("--source-profile", "--target-profile", "--source-url", "--target-url"):
            parser.add_argument(flag, type=text_arg, required=True)
        parser.add_argument("--total-resources", type=count_arg, required=True)
        if completed:
            for flag in ("--succeeded", "--failed", "--skipped"):
                parser.add_argument(flag, type=count_arg, required=True)

    return configure


def _build_transfer(args: argparse.Namespace, common: _Common) -> Event:
    counts = None
    if "succeeded" in args:
        counts = catalog.TransferCounts(
            succeeded=args.succeeded, failed=args.failed, skipped=args.skipped
        )
        done = counts.succeeded + counts.failed + counts.skipped
        if done > args.total_resources:
            raise CommandInputError(
                f"--succeeded + --failed + --skipped is {done}, more than "
                f"--total-resources {args.total_resources}"
            )
    return catalog.workspace_transfer(
        catalog.Transfer(
            transfer_id=args.transfer_id,
            description=args.description,
            source_profile=args.source_profile,
            target_profile=args.target_profile,
            source_url=args.source_url,
            target_url=args.target_url,
            total_resources=args.total_resources,
        ),
        completed=counts,
        occurred=common.occurred,
        event_id=common.event_id,
    )


def _configure_docker(*, with_status: bool) -> Callable[[argparse.ArgumentParser], None]:
    def configure(parser: argparse.ArgumentParser) -> None:
        if with_status:
            parser.add_argument("--status", choices=CONTAINER_STATUSES, required=True)
        parser.add_argument(
            "--container-id",
            type=text_arg,
            required=True,
            help="the container's id, or for a failed creation what identifies the attempt "
            "(e.g. the intended container name)",
        )
        parser.add_argument("--container-name", type=text_arg, help="default: --container-id")
        _refs_flags(
            parser,
            flow_run_required=False,
            worker_required=True,
            worker_help="the worker managing the container (required)",
        )

    return configure


def _build_docker(args: argparse.Namespace, common: _Common) -> Event:
    fields: dict[str, Any] = {
        "container_id": args.container_id,
        "container_name": args.container_name,
        "refs": _refs(args, worker=False),
        "worker_name": args.worker_name,
        "occurred": common.occurred,
        "event_id": common.event_id,
    }
    if "status" in args:
        return docker_container_event(status=args.status, **fields)
    return docker_container_creation_failed(**fields)


def _configure_pod(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--phase", choices=POD_PHASES, required=True)
    parser.add_argument("--pod-uid", type=text_arg, required=True)
    parser.add_argument("--pod-name", type=text_arg, required=True)
    parser.add_argument("--namespace", type=text_arg, required=True)
    parser.add_argument(
        "--eviction-reason", type=text_arg, help="required with --phase evicted, and only then"
    )
    _refs_flags(parser, flow_run_required=True)


def _build_pod(args: argparse.Namespace, common: _Common) -> Event:
    if (args.phase == "evicted") != (args.eviction_reason is not None):
        raise CommandInputError("--eviction-reason goes with --phase evicted, and only with it")
    return kubernetes_pod_event(
        phase=args.phase,
        pod_uid=args.pod_uid,
        pod_name=args.pod_name,
        namespace=args.namespace,
        refs=_refs(args),
        occurred=common.occurred,
        event_id=common.event_id,
        eviction_reason=args.eviction_reason,
    )


def _configure_ecs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", choices=ECS_TASK_STATUSES, required=True)
    parser.add_argument("--task-arn", type=text_arg, required=True)
    parser.add_argument("--cluster-arn", type=text_arg)
    parser.add_argument("--task-definition-arn", type=text_arg)
    _refs_flags(parser, flow_run_required=True)


def _build_ecs(args: argparse.Namespace, common: _Common) -> Event:
    if not args.task_arn.startswith("arn:") or "/" not in args.task_arn:
        raise CommandInputError(
            f"--task-arn {args.task_arn!r} is not a task ARN "
            "(expected e.g. arn:aws:ecs:us-east-1:123456789012:task/cluster/<task id>)"
        )
    return ecs_task_event(
        status=args.status,
        task_arn=args.task_arn,
        cluster_arn=args.cluster_arn,
        task_definition_arn=args.task_definition_arn,
        refs=_refs(args),
        occurred=common.occurred,
        event_id=common.event_id,
    )


FAMILIES: Mapping[str, _Family] = {
    "block-loaded": _Family(
        "prefect.block.{type}.loaded: a block document was loaded", _configure_block, _build_block
    ),
    "pull-step": _Family(
        "prefect.flow-run.pull-step.{executed,failed}: a deployment pull step ran",
        _configure_pull_step,
        _build_pull_step,
    ),
    "transfer-started": _Family(
        "prefect.workspace.transfer.started: a workspace transfer began",
        _configure_transfer(completed=False),
        _build_transfer,
    ),
    "transfer-completed": _Family(
        "prefect.workspace.transfer.completed: a workspace transfer ended",
        _configure_transfer(completed=True),
        _build_transfer,
    ),
    "docker-creation-failed": _Family(
        "prefect.docker.container.creation-failed: a worker could not create a container",
        _configure_docker(with_status=False),
        _build_docker,
    ),
    "docker-container": _Family(
        "prefect.docker.container.{status}: a container's status changed",
        _configure_docker(with_status=True),
        _build_docker,
    ),
    "kubernetes-pod": _Family(
        "prefect.kubernetes.pod.{phase}: a pod's phase changed", _configure_pod, _build_pod
    ),
    "ecs-task": _Family(
        "prefect.ecs.task.{status}: an ECS task's status changed", _configure_ecs, _build_ecs
    ),
}


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    options = common.add_argument_group("every family")
    options.add_argument(
        "--id",
        dest="event_id",
        metavar="UUID",
        type=uuid_arg,
        help="the event's id (default: a random uuid4). Give the same id to retry: the server "
        "keeps one event per id, and an id it already holds is not sent again",
    )
    options.add_argument(
        "--occurred",
        metavar="TIMESTAMP",
        type=timestamp_arg,
        help="when it happened, RFC 3339 with a time zone (default: now, UTC)",
    )
    options.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=seconds_arg,
        help="how long to keep trying to deliver (default: INFRA_OBSERVER_EMITTER_DRAIN_SECONDS)",
    )
    options.add_argument(
        "--out",
        metavar="FILE",
        type=Path,
        help="where an event that was not delivered is kept: appended to FILE as a JSON line "
        "(default: printed on stdout), to be sent again with its --id and --occurred",
    )
    emit = commands.add_parser(
        "emit",
        help="emit one event of the catalog",
        description="Build one event of the infrastructure events catalog from flags and "
        "deliver it through the configured sink: the events API when PREFECT_API_URL is set, "
        "else one JSON line on stdout. Exit 0 when delivered, 1 when not, 2 on bad input. "
        "An event that was not delivered is printed as a JSON line (or appended to --out "
        "FILE), and stderr says how to retry it. See docs/events.md.",
    )
    families = emit.add_subparsers(dest="family", required=True, metavar="FAMILY")
    for name, family in FAMILIES.items():
        parser = families.add_parser(name, help=family.help, parents=[common])
        parser.description = family.help
        family.configure(parser)


def event_from_args(args: argparse.Namespace, *, now: datetime | None = None) -> Event:
    """The event the flags describe; raises `CommandInputError` when they contradict."""
    common = _Common(
        event_id=args.event_id or uuid.uuid4(),
        occurred=args.occurred or now or datetime.now(UTC),
    )
    try:
        return FAMILIES[args.family].build(args, common)
    except ValueError as exc:
        raise CommandInputError(str(exc)) from exc


async def deliver(
    event: Event, *, settings: Settings, drain_seconds: float | None = None, retry: bool = False
) -> Outcome:
    """Send the event through an emitter and the configured sink; its outcome.

    `retry`: the id was given, so this may be a retry; an id the server already holds is
    not sent again (see `_already_stored`) and counts as delivered (DUPLICATE).
    """
    sink = app.build_sink(settings)
    try:
        if retry and isinstance(sink, EventsApiSink) and await _already_stored(event, sink.api):
            log.info("event_already_stored", event_id=str(event.id), event_name=event.event)
            return Outcome.DUPLICATE
        metrics = Metrics(CollectorRegistry())
        emitter = Emitter(sink=sink, settings=settings.emitter, metrics=metrics)
        async with asyncio.TaskGroup() as group:
            group.create_task(emitter.run(), name="emitter")
            outcome = await emitter.submit(event, source=SOURCE)
            emitter.stop(settings.emitter.drain_seconds if drain_seconds is None else drain_seconds)
            result = await outcome
    finally:
        await sink.aclose()
    log.info("emit_finished", event_id=str(event.id), event_name=event.event, outcome=result.value)
    return result


async def _already_stored(event: Event, api: PrefectApi) -> bool:
    """Whether the server already holds this id (a retried emit).

    The server would store it once anyway, but Prefect 3.8's persister fails a write batch
    made only of known ids and may drop other events with it: better not to send it. A
    failed lookup is logged and the event is sent.
    """
    try:
        found = await stored_ids(api, events=[event])
    except DeliveryError as exc:
        log.warning("stored_event_lookup_failed", url=api.url(FILTER_PATH), error=str(exc))
        return False
    return bool(found)


def keep_undelivered(event: Event, *, out: Path | None, stdout: BinaryIO) -> str:
    """Write the event that was not delivered where it can be sent again from: appended to
    `out` as a JSON line, or on `stdout` when there is no `out` or it cannot be written.
    Returns where it went, in words."""
    line = event.to_json() + b"\n"
    where = "printed on stdout"
    if out is not None:
        try:
            with out.open("ab") as file:
                file.write(line)
        except OSError as exc:
            log.error("undelivered_event_not_kept", path=str(out), error=exc.strerror or str(exc))
            where += f" ({out} could not be written)"
        else:
            return f"appended to {out}"
    stdout.write(line)
    stdout.flush()
    return where


def not_delivered_advice(event: Event, *, outcome: Outcome, kept: str, destination: str) -> str:
    """What to tell the user about an event that was not delivered, and how to retry it."""
    what = f"event {event.id} ({event.event})"
    if outcome is Outcome.REJECTED:
        return (
            f"{what} was refused as invalid (see event_rejected in the log); it is {kept}. "
            "Sent again unchanged, it would be refused again."
        )
    occurred = event.occurred.isoformat().replace("+00:00", "Z")
    return (
        f"{what} was not delivered to {destination}; it is {kept}. To retry, run the same "
        f"command with --id {event.id} --occurred {occurred}: the events API keeps one event "
        "per id, so a retry never stores it twice."
    )
