"""The ECS source: "ECS Task State Change" events from an SQS queue fed by EventBridge.

A message is deleted only once its event was delivered (or found already delivered), so
nothing is acknowledged that could still be lost: a message whose task tags cannot be read,
or whose event is not delivered yet, stays in the queue and comes back. Messages that are not
ECS task state changes are logged, counted and left to the queue's dead-letter policy (or
deleted, by configuration).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError
from prometheus_client import CollectorRegistry, Counter, Gauge

from infra_observer.config import EcsSettings
from infra_observer.errors import ConfigError, InputError, SourceError
from infra_observer.events.handoff import EventHandoff, Outcome
from infra_observer.metrics import Metrics
from infra_observer.retry import Backoff
from infra_observer.sources.ecs.translate import (
    TaskStateChange,
    Verdict,
    parse_message,
    parse_tag_filters,
    tags_of,
    translate,
)
from infra_observer.sources.skips import SkipLog

log = structlog.get_logger(__name__)

SOURCE = "ecs"
DESCRIBE_TASKS = "ecs:DescribeTasks"
IAM_ACTIONS = frozenset(
    {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
        DESCRIBE_TASKS,
    }
)
"""Every AWS action this source calls: the policy in deploy/aws/ grants exactly these."""
# "403": botocore's code when a refusal's body cannot be parsed (some compatible services).
_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "KMS.AccessDeniedException",
        "403",
    }
)
_CREDENTIAL_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
    }
)
_MISSING_QUEUE_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
_QUEUE_URL_REGION = re.compile(r"^https://sqs[.-]([a-z0-9-]+)\.amazonaws\.com(\.cn)?/")
_TASK_ARN_CLUSTER = re.compile(r":task/([^/]+)/[^/]+$")
_LONGEST_RETRY_EXPONENT = 16


class EcsMetrics:
    """Metrics of this source only, on the application's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "infra_observer_ecs_messages",
            "SQS messages handled, by result (what became of the message).",
            ["result"],
            registry=registry,
        )
        self.tag_reads = Counter(
            "infra_observer_ecs_tag_reads",
            "ecs:DescribeTasks calls for task tags, by result.",
            ["result"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "infra_observer_ecs_messages_in_flight",
            "Messages received and not yet deleted or released.",
            registry=registry,
        )


class _Ack(enum.Enum):
    DELETE = "delete"
    RETRY = "retry"
    """Make the message visible again after a delay: it could not be handled yet."""
    LEAVE = "leave"
    """Let its visibility lapse (dead-letter policy, or the process is stopping)."""


@dataclass(slots=True)
class _TaskEntry:
    tags: dict[str, str] | None = None
    version: int | None = None
    """The highest `detail.version` whose change was delivered."""


class _TaskMemory:
    """Tags and last delivered version per task ARN, least recently used first out."""

    def __init__(self, *, limit: int, on_evict: Callable[[], None]) -> None:
        self._entries: OrderedDict[str, _TaskEntry] = OrderedDict()
        self._limit = limit
        self._on_evict = on_evict

    def get(self, task_arn: str) -> _TaskEntry:
        entry = self._entries.get(task_arn)
        if entry is None:
            entry = self._entries[task_arn] = _TaskEntry()
            if len(self._entries) > self._limit:
                self._entries.popitem(last=False)
                self._on_evict()
        else:
            self._entries.move_to_end(task_arn)
        return entry


class _KeyedLocks:
    """One lock per key, dropped when nobody holds or waits for it (bounded by concurrency)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class _Slots:
    """How many more messages may be handled at once."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._freed = asyncio.Event()

    async def wait_free(self) -> int:
        while self._free == 0:
            self._freed.clear()
            await self._freed.wait()
        return self._free

    def take(self) -> None:
        self._free -= 1

    def release(self) -> None:
        self._free += 1
        self._freed.set()


@dataclass(frozen=True, slots=True)
class _Clients:
    sqs: Any
    ecs: Any
    queue_url: str


class EcsSource:
    """Consumes the queue named by `settings.queue_url`; satisfies the `Source` protocol."""

    name = SOURCE

    def __init__(self, *, settings: EcsSettings, handoff: EventHandoff, metrics: Metrics) -> None:
        self._settings = settings
        self._handoff = handoff
        self._metrics = metrics
        self._own_metrics = EcsMetrics(metrics.registry)
        self._tag_filters = parse_tag_filters(settings.tag_filters)
        self._tasks = _TaskMemory(
            limit=settings.tags_cache_size,
            on_evict=metrics.bound_hits.labels("ecs_tasks_cache").inc,
        )
        self._task_locks = _KeyedLocks()
        self._skips = SkipLog(source=SOURCE, metrics=metrics)
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    # --- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        # Exported from the start: an alert on 0 must fire for a queue never reached.
        self._set_ready(False)
        async with self._clients() as clients:
            await self._reach_queue(clients)
            await self._consume(clients)

    async def check(self) -> str:
        try:
            async with self._clients() as clients:
                attributes = await self._queue_attributes(clients)
        except (ClientError, BotoCoreError) as exc:
            raise SourceError(self._explain(exc)) from exc
        return _describe_queue(self._queue_url, attributes)

    @property
    def _queue_url(self) -> str:
        if not self._settings.queue_url:
            raise ConfigError("INFRA_OBSERVER_ECS_QUEUE_URL is required for the ECS source")
        return self._settings.queue_url

    @contextlib.asynccontextmanager
    async def _clients(self) -> AsyncIterator[_Clients]:
        session = get_session()
        region = self._region(session)
        config = AioConfig(
            retries={"mode": "standard"},
            connect_timeout=10,
            # Long polls hold the connection open for up to wait_time_seconds.
            read_timeout=self._settings.wait_time_seconds + 20,
            max_pool_connections=self._settings.concurrency * 2 + 2,
        )
        options = {
            "region_name": region,
            "endpoint_url": self._settings.endpoint_url,
            "config": config,
        }
        async with (
            session.create_client("sqs", **options) as sqs,
            session.create_client("ecs", **options) as ecs,
        ):
            yield _Clients(sqs=sqs, ecs=ecs, queue_url=self._queue_url)

    def _region(self, session: AioSession) -> str:
        # The configured region, else the standard chain (env, profile), else the queue URL's.
        region = self._settings.region or session.get_config_variable("region")
        if not region:
            match = _QUEUE_URL_REGION.match(self._queue_url)
            region = match.group(1) if match else None
        if not region:
            raise ConfigError(
                "no AWS region: set INFRA_OBSERVER_ECS_REGION or AWS_REGION (the queue URL "
                f"{self._queue_url!r} does not name one)"
            )
        return str(region)

    async def _queue_attributes(self, clients: _Clients) -> dict[str, str]:
        response = await clients.sqs.get_queue_attributes(
            QueueUrl=clients.queue_url,
            AttributeNames=["QueueArn", "ApproximateNumberOfMessages", "RedrivePolicy"],
        )
        attributes: dict[str, str] = response.get("Attributes", {})
        return attributes

    async def _reach_queue(self, clients: _Clients) -> None:
        backoff = Backoff(initial=1.0, maximum=self._settings.backoff_max_seconds)
        while True:
            try:
                attributes = await self._queue_attributes(clients)
            except (ClientError, BotoCoreError) as exc:
                await self._sqs_failed(exc, backoff)
                continue
            log.info(
                "ecs_queue_reached",
                queue_arn=attributes.get("QueueArn"),
                messages_waiting=attributes.get("ApproximateNumberOfMessages"),
                redrive_policy=attributes.get("RedrivePolicy"),
            )
            if "RedrivePolicy" not in attributes:
                log.warning(
                    "ecs_queue_without_dead_letter_queue",
                    queue_url=clients.queue_url,
                    fix="give the queue a redrive policy (deploy/aws/ does) so messages that "
                    "keep failing are set aside instead of retried forever",
                )
            self._set_ready(True)
            return

    def _set_ready(self, ready: bool) -> None:
        self._ready = ready
        self._metrics.source_ready.labels(SOURCE).set(1 if ready else 0)

    async def _sqs_failed(self, exc: ClientError | BotoCoreError, backoff: Backoff) -> None:
        self._set_ready(False)
        reason = _error_code(exc)
        self._metrics.source_reconnects.labels(SOURCE, reason).inc()
        delay = backoff.next_delay()
        log.error(
            "ecs_queue_error",
            reason=reason,
            error=self._explain(exc),
            missing_permission=_missing_permission(exc),
            retry_in=round(delay, 2),
        )
        await asyncio.sleep(delay)

    # --- the receive loop -------------------------------------------------------------------

    async def _consume(self, clients: _Clients) -> None:
        slots = _Slots(self._settings.concurrency)
        backoff = Backoff(initial=1.0, maximum=self._settings.backoff_max_seconds)
        async with asyncio.TaskGroup() as group:
            while True:
                free = await slots.wait_free()
                try:
                    messages = await self._receive(clients, min(free, self._settings.max_messages))
                except (ClientError, BotoCoreError) as exc:
                    await self._sqs_failed(exc, backoff)
                    continue
                backoff.reset()
                self._set_ready(True)
                for message, parsed in _in_task_order(messages):
                    slots.take()
                    group.create_task(
                        self._handle(clients, message, parsed, release=slots.release),
                        name=f"ecs-message:{message.get('MessageId')}",
                    )

    async def _receive(self, clients: _Clients, count: int) -> list[dict[str, Any]]:
        response = await clients.sqs.receive_message(
            QueueUrl=clients.queue_url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=self._settings.wait_time_seconds,
            VisibilityTimeout=self._settings.visibility_timeout_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    async def _handle(
        self,
        clients: _Clients,
        message: dict[str, Any],
        parsed: TaskStateChange | InputError,
        *,
        release: Callable[[], None],
    ) -> None:
        self._own_metrics.in_flight.inc()
        try:
            async with self._kept_invisible(clients, message):
                ack = await self._ack_for(clients, message, parsed)
            await self._settle(clients, message, ack)
        except Exception:
            # A bug must cost one message (it comes back), never the loop.
            self._own_metrics.messages.labels("failed").inc()
            log.exception("ecs_message_failed", message_id=message.get("MessageId"))
        finally:
            self._own_metrics.in_flight.dec()
            release()

    async def _ack_for(
        self, clients: _Clients, message: Mapping[str, Any], parsed: TaskStateChange | InputError
    ) -> _Ack:
        if isinstance(parsed, InputError):
            return self._invalid(message, parsed)
        # One task's messages are handled in order, so its versions and follows chain hold.
        async with self._task_locks.hold(parsed.task_arn):
            return await self._process(clients, message, parsed)

    def _invalid(self, message: Mapping[str, Any], error: InputError) -> _Ack:
        self._metrics.input_errors.labels(SOURCE, "message").inc()
        self._own_metrics.messages.labels("invalid").inc()
        delete = self._settings.delete_invalid_messages
        log.warning(
            "ecs_message_invalid",
            message_id=message.get("MessageId"),
            reason=str(error),
            receive_count=_receive_count(message),
            action="deleted" if delete else "left_for_dead_letter_queue",
        )
        return _Ack.DELETE if delete else _Ack.LEAVE

    async def _process(
        self, clients: _Clients, message: Mapping[str, Any], change: TaskStateChange
    ) -> _Ack:
        entry = self._tasks.get(change.task_arn)
        if entry.tags is None:
            entry.tags = await self._read_tags(clients, change)
            if entry.tags is None:
                self._own_metrics.messages.labels("tags_unreadable").inc()
                return _Ack.RETRY
        decision = translate(
            change, tags=entry.tags, last_version=entry.version, tag_filters=self._tag_filters
        )
        if decision.event is None:
            self._own_metrics.messages.labels(decision.verdict.value).inc()
            if decision.verdict is Verdict.NOT_SELECTED:
                log.debug("ecs_task_not_selected", task_arn=change.task_arn)
            elif decision.skip is not None:
                self._skips.report(change.task_arn, decision.skip, status=change.status)
            else:
                log.info(
                    "ecs_change_skipped",
                    reason=decision.verdict.value,
                    task_arn=change.task_arn,
                    version=change.version,
                    last_delivered_version=entry.version,
                    status=change.status,
                )
            return _Ack.DELETE
        for problem in decision.tag_problems:
            self._metrics.input_errors.labels(SOURCE, "tag").inc()
            log.warning("ecs_task_tag_invalid", task_arn=change.task_arn, problem=problem)
        for problem in change.problems:
            self._metrics.input_errors.labels(SOURCE, "detail").inc()
            log.warning("ecs_task_detail_invalid", task_arn=change.task_arn, problem=problem)
        outcome = await (await self._handoff.submit(decision.event, source=SOURCE))
        return self._after_delivery(message, change, entry, outcome)

    def _after_delivery(
        self,
        message: Mapping[str, Any],
        change: TaskStateChange,
        entry: _TaskEntry,
        outcome: Outcome,
    ) -> _Ack:
        self._own_metrics.messages.labels(outcome.value).inc()
        if outcome in (Outcome.DELIVERED, Outcome.DUPLICATE):
            if change.version is not None and (entry.version or 0) <= change.version:
                entry.version = change.version
            return _Ack.DELETE
        if outcome is Outcome.REJECTED:
            # The emitter logged why; retrying cannot help, so it goes where invalid input goes.
            delete = self._settings.delete_invalid_messages
            log.warning(
                "ecs_event_rejected",
                message_id=message.get("MessageId"),
                task_arn=change.task_arn,
                action="deleted" if delete else "left_for_dead_letter_queue",
            )
            return _Ack.DELETE if delete else _Ack.LEAVE
        # UNDELIVERED: the process is stopping; the message comes back after its visibility.
        return _Ack.LEAVE

    async def _read_tags(self, clients: _Clients, change: TaskStateChange) -> dict[str, str] | None:
        cluster = change.cluster_arn or _cluster_of(change.task_arn)
        try:
            response = await clients.ecs.describe_tasks(
                cluster=cluster, tasks=[change.task_arn], include=["TAGS"]
            )
        except (ClientError, BotoCoreError) as exc:
            self._own_metrics.tag_reads.labels("error").inc()
            log.warning(
                "ecs_tags_unreadable",
                task_arn=change.task_arn,
                reason=_error_code(exc),
                error=self._explain(exc),
                missing_permission=_missing_permission(exc),
                action="retry_later",
            )
            return None
        task = _matching_task(response.get("tasks") or [], change.task_arn)
        if task is None:
            self._own_metrics.tag_reads.labels("missing").inc()
            reasons = [f.get("reason") for f in response.get("failures") or []]
            log.warning(
                "ecs_tags_unreadable",
                task_arn=change.task_arn,
                reason="task_not_found",
                failures=reasons,
                action="retry_later",
            )
            return None
        self._own_metrics.tag_reads.labels("ok").inc()
        return tags_of(task)

    # --- acknowledgement --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _kept_invisible(
        self, clients: _Clients, message: Mapping[str, Any]
    ) -> AsyncIterator[None]:
        keeper = asyncio.create_task(
            self._extend_visibility(clients, message), name="ecs-visibility"
        )
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _extend_visibility(self, clients: _Clients, message: Mapping[str, Any]) -> None:
        timeout = self._settings.visibility_timeout_seconds
        while True:
            # Renew at half the timeout, so one failed renewal still leaves time for the next.
            await asyncio.sleep(timeout / 2)
            try:
                await clients.sqs.change_message_visibility(
                    QueueUrl=clients.queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=timeout,
                )
            except (ClientError, BotoCoreError) as exc:
                log.warning(
                    "ecs_visibility_not_extended",
                    message_id=message.get("MessageId"),
                    error=self._explain(exc),
                )

    async def _settle(self, clients: _Clients, message: Mapping[str, Any], ack: _Ack) -> None:
        if ack is _Ack.LEAVE:
            return
        try:
            if ack is _Ack.DELETE:
                await clients.sqs.delete_message(
                    QueueUrl=clients.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
            else:
                await clients.sqs.change_message_visibility(
                    QueueUrl=clients.queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=self._retry_delay(message),
                )
        except (ClientError, BotoCoreError) as exc:
            # Not fatal: the message comes back and is recognised by its id and version.
            log.warning(
                "ecs_message_not_settled",
                message_id=message.get("MessageId"),
                action=ack.value,
                error=self._explain(exc),
            )

    def _retry_delay(self, message: Mapping[str, Any]) -> int:
        attempt = min(_receive_count(message), _LONGEST_RETRY_EXPONENT)
        return int(min(2 ** (attempt - 1), self._settings.backoff_max_seconds))

    # --- errors -----------------------------------------------------------------------------

    def _explain(self, exc: ClientError | BotoCoreError) -> str:
        """What went wrong and how to fix it, naming the IAM action that was refused."""
        if isinstance(exc, ClientError):
            return self._explain_refusal(exc)
        if isinstance(exc, NoCredentialsError):
            return (
                "no AWS credentials found: provide them the standard way (AWS_PROFILE, "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, web identity / IRSA, instance role)"
            )
        if isinstance(exc, NoRegionError):
            return "no AWS region: set INFRA_OBSERVER_ECS_REGION or AWS_REGION"
        return f"{exc} (check network access to the AWS endpoint)"

    def _explain_refusal(self, exc: ClientError) -> str:
        code = _error_code(exc)
        action = _iam_action(exc.operation_name)
        if code in _DENIED_CODES:
            target = "tasks of the watched clusters" if action == DESCRIBE_TASKS else "the queue"
            return (
                f"{action} was denied ({code}): allow {action} on {target} for the daemon's "
                "IAM role (deploy/aws/ has the policy with every action needed)"
            )
        if code in _CREDENTIAL_CODES:
            return f"AWS rejected the credentials ({code}): check the daemon's AWS identity"
        if code in _MISSING_QUEUE_CODES:
            return (
                f"queue {self._settings.queue_url} does not exist ({code}): check "
                "INFRA_OBSERVER_ECS_QUEUE_URL and the region"
            )
        message = exc.response.get("Error", {}).get("Message", "")
        return f"{action} failed ({code}): {message}"


def _describe_queue(queue_url: str, attributes: Mapping[str, str]) -> str:
    dead_letter = "none"
    if "RedrivePolicy" in attributes:
        dead_letter = attributes["RedrivePolicy"]
    return (
        f"queue {attributes.get('QueueArn', queue_url)} reached: "
        f"{attributes.get('ApproximateNumberOfMessages', '?')} messages waiting, "
        f"redrive policy: {dead_letter}"
    )


def _in_task_order(
    messages: Sequence[dict[str, Any]],
) -> list[tuple[dict[str, Any], TaskStateChange | InputError]]:
    """Parse a batch and order each task's changes by version (a batch may hold several)."""
    parsed: list[tuple[dict[str, Any], TaskStateChange | InputError]] = []
    for message in messages:
        try:
            parsed.append((message, parse_message(message.get("Body", ""))))
        except InputError as exc:
            parsed.append((message, exc))

    def version(item: tuple[dict[str, Any], TaskStateChange | InputError]) -> int:
        change = item[1]
        if isinstance(change, InputError) or change.version is None:
            return -1
        return change.version

    return sorted(parsed, key=version)


def _matching_task(tasks: Sequence[Mapping[str, Any]], task_arn: str) -> Mapping[str, Any] | None:
    for task in tasks:
        if task.get("taskArn") == task_arn:
            return task
    return None


def _cluster_of(task_arn: str) -> str:
    # Old-format ARNs (`task/<id>`) do not name the cluster: ECS then means `default`.
    match = _TASK_ARN_CLUSTER.search(task_arn)
    return match.group(1) if match else "default"


def _receive_count(message: Mapping[str, Any]) -> int:
    try:
        return int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1))
    except ValueError:
        return 1


def _error_code(exc: ClientError | BotoCoreError) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "Unknown"))
    return type(exc).__name__


def _missing_permission(exc: ClientError | BotoCoreError) -> str | None:
    """The IAM action that was refused, when the error is a refusal."""
    if isinstance(exc, ClientError) and _error_code(exc) in _DENIED_CODES:
        return _iam_action(exc.operation_name)
    return None


def _iam_action(operation_name: str) -> str:
    if operation_name == "DescribeTasks":
        return DESCRIBE_TASKS
    return f"sqs:{operation_name}"
