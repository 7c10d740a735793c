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
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from infra_observer.config import EcsSettings
from infra_observer.errors import InputError, SourceError
from infra_observer.events.handoff import EventHandoff, Outcome
from infra_observer.metrics import Metrics
from infra_observer.observations import FlowRunHandoff
from infra_observer.retry import Backoff
from infra_observer.sources.base import Translation, report_input_error
from infra_observer.sources.ecs.advice import error_code, explain, missing_permission
from infra_observer.sources.ecs.clients import (
    Clients,
    describe_queue,
    open_clients,
    queue_attributes,
    queue_url,
)
from infra_observer.sources.ecs.concurrency import KeyedLocks, Slots
from infra_observer.sources.ecs.crash_logs import read_crash_logs
from infra_observer.sources.ecs.lifecycle import observation
from infra_observer.sources.ecs.memory import TaskEntry, TaskMemory
from infra_observer.sources.ecs.messages import (
    Ack,
    in_task_order,
    receive_count,
    retry_delay,
)
from infra_observer.sources.ecs.metrics import EcsMetrics
from infra_observer.sources.ecs.tags import read_tags
from infra_observer.sources.ecs.translate import (
    FLOW_RUN_TAG,
    NOT_SELECTED,
    TaskStateChange,
    parse_tag_filters,
    translate,
)
from infra_observer.sources.skips import SkipLog

log = structlog.get_logger(__name__)

SOURCE = "ecs"


class EcsSource:
    """Consumes the queue named by `settings.queue_url`; satisfies the `Source` protocol."""

    name = SOURCE

    def __init__(
        self,
        *,
        settings: EcsSettings,
        handoff: EventHandoff,
        metrics: Metrics,
        flow_runs: FlowRunHandoff | None = None,
    ) -> None:
        self._settings = settings
        self._handoff = handoff
        self._flow_runs = flow_runs
        self._ecs: Any = None
        self._metrics = metrics
        self._own_metrics = EcsMetrics(metrics.registry)
        self._tag_filters = parse_tag_filters(settings.tag_filters)
        self._tasks = TaskMemory(
            limit=settings.tags_cache_size,
            on_evict=metrics.bound_hits.labels("ecs_tasks_cache").inc,
        )
        self._task_locks = KeyedLocks()
        self._skips = SkipLog(source=SOURCE, metrics=metrics)
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    # --- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        # Exported from the start: an alert on 0 must fire for a queue never reached.
        self._set_ready(False)
        async with open_clients(self._settings) as clients:
            self._ecs = clients.ecs
            try:
                await self._reach_queue(clients)
                await self._consume(clients)
            finally:
                self._ecs = None

    async def check(self) -> str:
        try:
            async with open_clients(self._settings) as clients:
                attributes = await queue_attributes(clients)
        except (ClientError, BotoCoreError) as exc:
            raise SourceError(self._explain(exc)) from exc
        return describe_queue(queue_url(self._settings), attributes)

    async def _reach_queue(self, clients: Clients) -> None:
        backoff = Backoff(initial=1.0, maximum=self._settings.backoff_max_seconds)
        while True:
            try:
                attributes = await queue_attributes(clients)
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
        reason = error_code(exc)
        self._metrics.source_reconnects.labels(SOURCE, reason).inc()
        delay = backoff.next_delay()
        log.error(
            "ecs_queue_error",
            reason=reason,
            error=self._explain(exc),
            missing_permission=missing_permission(exc),
            retry_in=round(delay, 2),
        )
        await asyncio.sleep(delay)

    def _explain(self, exc: ClientError | BotoCoreError) -> str:
        return explain(exc, queue_url=self._settings.queue_url)

    # --- the receive loop -------------------------------------------------------------------

    async def _consume(self, clients: Clients) -> None:
        slots = Slots(self._settings.concurrency)
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
                for message, parsed in in_task_order(messages):
                    slots.take()
                    group.create_task(
                        self._handle(clients, message, parsed, release=slots.release),
                        name=f"ecs-message:{message.get('MessageId')}",
                    )

    async def _receive(self, clients: Clients, count: int) -> list[dict[str, Any]]:
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
        clients: Clients,
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
        self, clients: Clients, message: Mapping[str, Any], parsed: TaskStateChange | InputError
    ) -> Ack:
        if isinstance(parsed, InputError):
            return self._invalid(message, parsed)
        # One task's messages are handled in order, so its versions and follows chain hold.
        async with self._task_locks.hold(parsed.task_arn):
            return await self._process(clients, message, parsed)

    def _invalid(self, message: Mapping[str, Any], error: InputError) -> Ack:
        self._own_metrics.messages.labels("invalid").inc()
        delete = self._settings.delete_invalid_messages
        report_input_error(
            self._metrics,
            source=SOURCE,
            kind="message",
            detail=str(error),
            message_id=message.get("MessageId"),
            receive_count=receive_count(message),
            action="deleted" if delete else "left_for_dead_letter_queue",
        )
        return Ack.DELETE if delete else Ack.LEAVE

    # --- one change -------------------------------------------------------------------------

    async def _process(
        self, clients: Clients, message: Mapping[str, Any], change: TaskStateChange
    ) -> Ack:
        entry = self._tasks.get(change.task_arn)
        if entry.tags is None:
            entry.tags = await read_tags(
                clients.ecs,
                change,
                metrics=self._own_metrics,
                queue_url=self._settings.queue_url,
            )
            if entry.tags is None:
                self._own_metrics.messages.labels("tags_unreadable").inc()
                return Ack.RETRY
        result = translate(change, entry.version, tags=entry.tags, tag_filters=self._tag_filters)
        if not result.events:
            self._no_event(change, result)
            return Ack.DELETE
        for problem in result.problems:
            report_input_error(
                self._metrics,
                source=SOURCE,
                kind=problem.kind,
                detail=problem.detail,
                task_arn=change.task_arn,
            )
        (event,) = result.events
        outcome = await (await self._handoff.submit(event, source=SOURCE))
        return self._after_delivery(message, change, entry, outcome=outcome, state=result.state)

    def _no_event(self, change: TaskStateChange, result: Translation[int]) -> None:
        """Count, and log as it deserves, a change that gives no event."""
        self._own_metrics.messages.labels(result.unchanged or "skipped").inc()
        if result.unchanged == NOT_SELECTED:
            log.debug("ecs_task_not_selected", task_arn=change.task_arn)
        elif result.skipped is not None:
            self._skips.report(change.task_arn, result.skipped, status=change.status)
        else:
            log.info(
                "ecs_change_skipped",
                reason=result.unchanged,
                task_arn=change.task_arn,
                version=change.version,
                last_delivered_version=result.state,
                status=change.status,
            )

    def _after_delivery(
        self,
        message: Mapping[str, Any],
        change: TaskStateChange,
        entry: TaskEntry,
        *,
        outcome: Outcome,
        state: int | None,
    ) -> Ack:
        self._own_metrics.messages.labels(outcome.value).inc()
        if outcome in (Outcome.DELIVERED, Outcome.DUPLICATE):
            entry.version = state
            self._observe(change, entry.tags or {})
            return Ack.DELETE
        if outcome is Outcome.REJECTED:
            # The emitter logged why; retrying cannot help, so it goes where invalid input goes.
            delete = self._settings.delete_invalid_messages
            log.warning(
                "ecs_event_rejected",
                message_id=message.get("MessageId"),
                task_arn=change.task_arn,
                action="deleted" if delete else "left_for_dead_letter_queue",
            )
            return Ack.DELETE if delete else Ack.LEAVE
        # UNDELIVERED: the process is stopping; the message comes back after its visibility.
        return Ack.LEAVE

    def _observe(self, change: TaskStateChange, tags: Mapping[str, str]) -> None:
        """Tell the lifecycle layer, once the change's event is stored."""
        if self._flow_runs is None:
            return
        told = observation(
            flow_run_id=uuid.UUID(tags[FLOW_RUN_TAG]),
            status=change.status,
            stop=change.stop,
            task_arn=change.task_arn,
            crash_logs=lambda lines: self._crash_logs(change, lines),
        )
        if told is not None:
            self._flow_runs.observe(told)

    async def _crash_logs(self, change: TaskStateChange, lines: int) -> Sequence[str]:
        if self._ecs is None:
            raise SourceError("the ECS source is not connected")
        return await read_crash_logs(
            self._ecs,
            settings=self._settings,
            task_definition_arn=change.task_definition_arn,
            task_arn=change.task_arn,
            lines=lines,
        )

    # --- acknowledgement --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _kept_invisible(
        self, clients: Clients, message: Mapping[str, Any]
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

    async def _extend_visibility(self, clients: Clients, message: Mapping[str, Any]) -> None:
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

    async def _settle(self, clients: Clients, message: Mapping[str, Any], ack: Ack) -> None:
        if ack is Ack.LEAVE:
            return
        try:
            if ack is Ack.DELETE:
                await clients.sqs.delete_message(
                    QueueUrl=clients.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
            else:
                await clients.sqs.change_message_visibility(
                    QueueUrl=clients.queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=retry_delay(
                        message, longest=self._settings.backoff_max_seconds
                    ),
                )
        except (ClientError, BotoCoreError) as exc:
            # Not fatal: the message comes back and is recognised by its id and version.
            log.warning(
                "ecs_message_not_settled",
                message_id=message.get("MessageId"),
                action=ack.value,
                error=self._explain(exc),
            )
