"""The list-then-watch loop over pods labelled `prefect.io/flow-run-id`.

One loop per scope: the whole cluster, or each configured namespace. Each loop lists the
matching pods (paginated), reconciles its per-pod state with the list, then watches from
the list's resourceVersion with bookmarks and a server-side timeout, resuming from the last
resourceVersion seen. A 410 Gone means the history is compacted: list again. A stream
silent for longer than the inactivity timeout is presumed dead and replaced. Every other
failure reconnects after a capped, jittered backoff.

Objects are read as plain JSON straight off the response, decoded only as far as the fields
`translate` reads (see `wire.py`): the generated model classes cost far more (see `client.py`).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import orjson
import structlog
from prometheus_client import Gauge

from infra_observer.config import KubernetesSettings
from infra_observer.errors import ConfigError, InputError, SourceError
from infra_observer.events.handoff import EventHandoff
from infra_observer.metrics import Metrics
from infra_observer.retry import Backoff
from infra_observer.sources.kubernetes.client import KubeClient, pods_path, read_body
from infra_observer.sources.kubernetes.translate import (
    FLOW_RUN_LABEL,
    PodState,
    Translation,
    translate,
)
from infra_observer.sources.kubernetes.wire import Decoder
from infra_observer.sources.skips import SkipLog
from infra_observer.transport import gathering_reads

log = structlog.get_logger(__name__)

SOURCE = "kubernetes"
# Pods per list request. A parsed page of worker-made pods is a few MB of Python objects:
# 100 keeps the peak of a 10,000-pod re-list under 20 MB (500 measured about 45 MB).
LIST_PAGE_SIZE = 100
CONNECT_TIMEOUT_SECONDS = 30.0
# A list page must arrive within this; pages are small (LIST_PAGE_SIZE pods).
LIST_TIMEOUT_SECONDS = 120.0
# Watch events hold whole pods; etcd caps an object at 1.5 MiB.
MAX_LINE_BYTES = 2**21


class _GoneError(Exception):
    """410: the resourceVersion (or continue token) is older than the server keeps."""


class _StalledError(Exception):
    """Nothing arrived within the inactivity timeout."""


class ApiStatusError(Exception):
    """The apiserver answered with an error status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message


# What a reconnect may follow: transport errors, error statuses, and timeouts.
_RETRYABLE = (httpx.HTTPError, ApiStatusError, OSError, TimeoutError, ValueError)


def label_selector(settings: KubernetesSettings) -> str:
    """Applied by the server, so pods without the label never reach this process."""
    extra = settings.label_selector.strip()
    return f"{FLOW_RUN_LABEL},{extra}" if extra else FLOW_RUN_LABEL


@dataclass(frozen=True, slots=True)
class Scope:
    """Where one loop lists and watches: a namespace, or None for the whole cluster."""

    namespace: str | None

    @property
    def label(self) -> str:
        return self.namespace if self.namespace is not None else "*"

    @property
    def where(self) -> str:
        return f"in namespace {self.namespace}" if self.namespace else "cluster-wide"


def scopes_of(settings: KubernetesSettings) -> list[Scope]:
    namespaces = list(dict.fromkeys(ns for ns in settings.namespaces if ns))
    return [Scope(ns) for ns in namespaces] if namespaces else [Scope(None)]


class KubernetesSource:
    """Watches pods of Prefect flow runs and hands their phase changes to the emitter."""

    name = SOURCE

    def __init__(
        self,
        *,
        settings: KubernetesSettings,
        handoff: EventHandoff,
        metrics: Metrics,
        list_page_size: int = LIST_PAGE_SIZE,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        # Built once: a second `run` resumes each scope from its resourceVersion and state.
        self._watches = [
            ScopeWatch(
                scope=scope,
                settings=settings,
                handoff=handoff,
                metrics=metrics,
                on_synced=self._on_synced,
                list_page_size=list_page_size,
            )
            for scope in scopes_of(settings)
        ]
        self._tracked = Gauge(
            "infra_observer_kubernetes_tracked_pods",
            "Pods whose state the Kubernetes source holds (one small entry each).",
            registry=metrics.registry,
        )
        self._tracked.set_function(lambda: self.tracked_pods)

    @property
    def ready(self) -> bool:
        return all(watch.synced for watch in self._watches)

    @property
    def tracked_pods(self) -> int:
        return sum(len(watch.pods) for watch in self._watches)

    async def run(self) -> None:
        self._metrics.source_ready.labels(source=SOURCE).set(1 if self.ready else 0)
        client = await KubeClient.connect(self._settings)
        log.info(
            "kubernetes_watch_starting",
            host=client.host,
            scopes=[watch.scope.label for watch in self._watches],
            label_selector=label_selector(self._settings),
        )
        try:
            async with asyncio.TaskGroup() as group:
                for watch in self._watches:
                    group.create_task(
                        watch.run(client), name=f"kubernetes-watch:{watch.scope.label}"
                    )
        finally:
            await client.aclose()

    def _on_synced(self) -> None:
        if self.ready:
            self._metrics.source_ready.labels(source=SOURCE).set(1)
            log.info("kubernetes_ready", pods=self.tracked_pods)

    async def check(self) -> str:
        """List pods once per scope (limit 1): proves credentials, reachability and RBAC."""
        client = await KubeClient.connect(self._settings)
        host = client.host
        selector = label_selector(self._settings)
        try:
            for scope in scopes_of(self._settings):
                try:
                    await list_page(
                        client, scope=scope, selector=selector, limit=1, decoder=Decoder()
                    )
                except ApiStatusError as exc:
                    raise SourceError(_status_advice(exc, host=host, scope=scope)) from exc
                except (httpx.HTTPError, OSError, TimeoutError) as exc:
                    raise SourceError(
                        f"cannot reach the Kubernetes API at {host} "
                        f"({type(exc).__name__}: {exc}); check the server address in the "
                        "kubeconfig, the network path to it and its CA certificate"
                    ) from exc
        finally:
            await client.aclose()
        where = ", ".join(scope.where for scope in scopes_of(self._settings))
        return f"Kubernetes API at {host}: pods labelled {selector} listable {where}"


def _status_advice(exc: ApiStatusError, *, host: str, scope: Scope) -> str:
    if exc.status == 401:
        return (
            f"the Kubernetes API at {host} refused the credentials (401 {exc.message}); "
            "the token or client certificate is invalid or expired: refresh the kubeconfig "
            "or the ServiceAccount token"
        )
    if exc.status == 403:
        grant = (
            f"a Role in namespace {scope.namespace} bound to this identity"
            if scope.namespace
            else "a ClusterRole and ClusterRoleBinding (or list the namespaces to watch in "
            "INFRA_OBSERVER_KUBERNETES_NAMESPACES and grant a Role in each)"
        )
        return (
            f"the Kubernetes API at {host} forbids listing pods {scope.where} (403: "
            f"{exc.message}); grant get, list and watch on pods with {grant}"
        )
    if exc.status == 404 and scope.namespace:
        return f"namespace {scope.namespace} not found at {host} (404 {exc.message})"
    return f"the Kubernetes API at {host} answered {exc} when listing pods {scope.where}"


def _fix_for(exc: Exception, scope: Scope) -> str | None:
    """What an operator should do about a refused request; None when nothing specific."""
    if not isinstance(exc, ApiStatusError) or exc.status not in (401, 403):
        return None
    if exc.status == 401:
        return "refresh the kubeconfig credentials or the ServiceAccount token"
    if scope.namespace:
        return f"grant get, list and watch on pods with a Role in namespace {scope.namespace}"
    return "grant get, list and watch on pods with a ClusterRole, or set namespaces to watch"


def _limits(read: float | None) -> httpx.Timeout:
    return httpx.Timeout(CONNECT_TIMEOUT_SECONDS, read=read)


async def _request(
    client: KubeClient, *, scope: Scope, limits: httpx.Timeout, params: dict[str, str]
) -> httpx.Response:
    """One pods request; an error status becomes an exception carrying the server's message."""
    response = await client.request("GET", pods_path(scope.namespace), params=params, limits=limits)
    if response.status_code != 200:
        body = await read_body(response)
        raise _status_error(response.status_code, response.reason_phrase, body)
    return response


def _status_error(status: int, reason: str, body: bytes) -> Exception:
    message = ""
    try:
        decoded = orjson.loads(body)
        if isinstance(decoded, dict):
            message = str(decoded.get("message") or "")
            reason = str(decoded.get("reason") or reason)
    except orjson.JSONDecodeError:
        message = body[:200].decode(errors="replace")
    if status == 410:
        return _GoneError(f"{reason}: {message}")
    return ApiStatusError(status, reason, message)


async def list_page(
    client: KubeClient,
    *,
    scope: Scope,
    selector: str,
    limit: int,
    decoder: Decoder,
    continue_token: str | None = None,
) -> dict[str, Any]:
    params = {"labelSelector": selector, "limit": str(limit)}
    if continue_token:
        params["continue"] = continue_token
    async with asyncio.timeout(LIST_TIMEOUT_SECONDS):
        response = await _request(
            client, scope=scope, limits=_limits(LIST_TIMEOUT_SECONDS), params=params
        )
        body = await read_body(response)
    page = decoder.pod_list(body)
    if not isinstance(page, dict) or not isinstance(page.get("items", []), list):
        raise ValueError("a pod list answer is not a PodList")
    return page


class ScopeWatch:
    """List-then-watch of one scope, with the state of the pods it has seen."""

    def __init__(
        self,
        *,
        scope: Scope,
        settings: KubernetesSettings,
        handoff: EventHandoff,
        metrics: Metrics,
        on_synced: Callable[[], None] | None = None,
        list_page_size: int = LIST_PAGE_SIZE,
    ) -> None:
        self.scope = scope
        self.pods: dict[str, PodState] = {}
        """uid -> state; one small entry per live labelled pod, released on deletion."""
        self.resource_version: str | None = None
        self.synced = False
        self._list_page_size = list_page_size
        self._settings = settings
        self._id_scheme = settings.event_id_scheme
        self._handoff = handoff
        self._metrics = metrics
        self._on_synced = on_synced
        self._selector = label_selector(settings)
        self._backoff = Backoff(maximum=settings.backoff_max_seconds)
        self._listed_version: str | None = None
        self._decoder = Decoder()
        self._skips = SkipLog(source=SOURCE, metrics=metrics)
        # For the lines of each pod change: bound once, as the module's lazy logger binds
        # anew on every call, and skipped with their arguments below debug (together about
        # a microsecond per change).
        self._changes_log = log.bind()
        self._log_changes: bool = self._changes_log.is_enabled_for(logging.DEBUG)

    async def run(self, client: KubeClient) -> None:
        """Forever: list when there is no usable resourceVersion, then watch from it."""
        while True:
            try:
                if self.resource_version is None:
                    await self._relist(client)
                await self._watch(client)
                self._reconnected("expired", level="debug")
            except _GoneError as exc:
                self._reconnected("gone", detail=str(exc))
                straight_after_list = self.resource_version == self._listed_version
                self.resource_version = None
                if straight_after_list:
                    # Gone even from a fresh list's version: do not spin on list + watch.
                    await self._sleep_backoff()
            except _StalledError:
                self._reconnected("inactivity", timeout=self._settings.inactivity_timeout_seconds)
            except _RETRYABLE as exc:
                self._reconnected("error", error=_describe(exc), fix=_fix_for(exc, self.scope))
                if isinstance(exc, ApiStatusError) and exc.status == 401:
                    await self._reload_credentials(client)
                await self._sleep_backoff()

    async def _reload_credentials(self, client: KubeClient) -> None:
        try:
            await client.reload_credentials()
        except ConfigError as exc:
            log.error("credentials_reload_failed", scope=self.scope.label, error=str(exc))

    async def _sleep_backoff(self) -> None:
        delay = self._backoff.next_delay()
        log.info("watch_backoff", scope=self.scope.label, delay=round(delay, 2))
        await asyncio.sleep(delay)

    def _reconnected(self, reason: str, *, level: str = "warning", **fields: Any) -> None:
        self._metrics.source_reconnects.labels(source=SOURCE, reason=reason).inc()
        getattr(log, level)(
            "watch_restarted",
            scope=self.scope.label,
            reason=reason,
            resource_version=self.resource_version,
            **fields,
        )

    # --- list ------------------------------------------------------------------------

    async def _relist(self, client: KubeClient) -> None:
        """List every matching pod and reconcile: new states are sent, vanished pods freed."""
        seen: set[str] = set()
        continue_token: str | None = None
        resource_version = ""
        while True:
            page = await list_page(
                client,
                scope=self.scope,
                selector=self._selector,
                limit=self._list_page_size,
                decoder=self._decoder,
                continue_token=continue_token,
            )
            items = page.pop("items", None) or []
            for index, pod in enumerate(items):
                items[index] = None  # let each parsed pod go as soon as it is handled
                uid = await self._apply("LISTED", pod)
                if uid is not None:
                    seen.add(uid)
            metadata = page.get("metadata") or {}
            resource_version = str(metadata.get("resourceVersion") or "")
            continue_token = metadata.get("continue") or None
            if not continue_token:
                break
        if not resource_version:
            raise ValueError("the pod list answer has no resourceVersion")
        vanished = [uid for uid in self.pods if uid not in seen]
        for uid in vanished:
            # Deleted while no watch was open: its final state is unknown, which is fine.
            del self.pods[uid]
        self.resource_version = self._listed_version = resource_version
        self._backoff.reset()
        log.info(
            "pods_listed",
            scope=self.scope.label,
            pods=len(seen),
            vanished=len(vanished),
            resource_version=resource_version,
        )
        if not self.synced:
            self.synced = True
            if self._on_synced is not None:
                self._on_synced()

    # --- watch -----------------------------------------------------------------------

    async def _watch(self, client: KubeClient) -> None:
        """One watch request, until the server ends it, it fails, or it goes silent."""
        inactivity = self._settings.inactivity_timeout_seconds
        params = {
            "labelSelector": self._selector,
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": self.resource_version or "",
            "timeoutSeconds": str(self._settings.watch_timeout_seconds),
        }
        guard = _StallGuard(inactivity)
        async with guard:
            guard.arm()
            response = await _request(client, scope=self.scope, limits=_limits(None), params=params)
            try:
                log.debug("watch_opened", scope=self.scope.label, rv=self.resource_version)
                await self._read_lines(response, guard)
            finally:
                await response.aclose()

    async def _read_lines(self, response: httpx.Response, guard: _StallGuard) -> None:
        """Handle the stream's lines until it ends.

        Reads let events gather for the coalescing interval before waiting for more:
        events arriving meanwhile wait in the socket and are then decrypted, parsed and
        handled in one go, which costs far less than waking up for each (see
        docs/performance.md).
        """
        lines = _LineSplitter()
        # An async generator underneath, typed as an iterator: closed when the watch ends.
        stream = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
        with gathering_reads(response, self._settings.read_coalesce_seconds):
            async with aclosing(stream) as chunks:
                while True:
                    guard.arm()
                    chunk = await anext(chunks, b"")
                    # Handling may wait on a full emitter queue: that is not a stall.
                    guard.disarm()
                    if not chunk:
                        if rest := lines.rest():
                            await self._handle_line(rest)
                        return  # the server ended the watch (timeoutSeconds): resume
                    for line in lines.feed(chunk):
                        await self._handle_line(line)

    async def _handle_line(self, line: bytes) -> None:
        try:
            message = self._decoder.watch_line(line)
            kind = message["type"]
            obj = message["object"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            self._input_error("stream", f"undecodable watch event ({exc}): {line[:200]!r}")
            return
        self._backoff.reset()
        if kind == "ERROR":
            raise _status_error(int(_get(obj, "code") or 0), "watch error", orjson.dumps(obj))
        if kind == "BOOKMARK":
            self._advance(obj)
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            self._input_error("stream", f"unknown watch event type {kind!r}")
            return
        await self._apply(kind, obj)
        self._advance(obj)

    def _advance(self, obj: object) -> None:
        version = _get(_get(obj, "metadata"), "resourceVersion")
        if isinstance(version, str) and version:
            self.resource_version = version
        else:
            self._input_error("stream", "watch event object has no metadata.resourceVersion")

    # --- one pod ---------------------------------------------------------------------

    async def _apply(self, kind: str, pod: object) -> str | None:
        """Translate one pod, update its state, hand its events over; the pod's uid."""
        metadata = _get(pod, "metadata")
        raw_uid = _get(metadata, "uid")
        uid: str | None = raw_uid if type(raw_uid) is str else None
        if uid is not None and not self._in_shard(uid):
            return None  # another replica's pod: neither held nor reported here
        previous = self.pods.get(uid) if uid is not None else None
        try:
            result = translate(pod, previous, observed=datetime.now(UTC), id_scheme=self._id_scheme)
        except Exception as exc:  # one odd pod must not stop the watch of all the others
            detail = str(exc) if isinstance(exc, InputError) else _describe(exc)
            self._input_error("pod", detail, uid=uid, exc_info=not isinstance(exc, InputError))
            if uid is None:
                return None
            if kind == "DELETED":
                self.pods.pop(uid, None)
            return uid
        if result.state is None:
            self._skipped(kind, metadata, result)
            return result.uid
        if kind == "DELETED":
            self.pods.pop(result.uid, None)
        else:
            self.pods[result.uid] = result.state
        if result.problems or (self._log_changes and (result.events or result.repeated)):
            self._report(kind, metadata, result)
        for event in result.events:
            # The outcome future is not awaited: delivery is the emitter's job, and a pod
            # watch has nothing to acknowledge.
            await self._handoff.submit(event, source=SOURCE)
        return result.uid

    def _skipped(self, kind: str, metadata: object, result: Translation) -> None:
        # Its label may have been changed to a bad value since its last event.
        self.pods.pop(result.uid, None)
        if result.skipped is not None:
            pod_name = f"{_get(metadata, 'namespace')}/{_get(metadata, 'name')}"
            self._skips.report(result.uid, result.skipped, pod=pod_name, scope=self.scope.label)
        if kind == "DELETED":
            self._skips.forget(result.uid)

    def _report(self, kind: str, metadata: object, result: Translation) -> None:
        pod_name = f"{_get(metadata, 'namespace')}/{_get(metadata, 'name')}"
        for problem in result.problems:
            self._input_error(problem.kind, problem.detail, pod=pod_name, uid=result.uid)
        if not self._log_changes:
            return
        if result.repeated and result.state is not None:
            self._changes_log.debug("pod_state_repeated", pod=pod_name, phase=result.state.phase)
        for event in result.events:
            self._changes_log.debug(
                "pod_event", pod=pod_name, watch_event=kind, name=event.event, id=event.id
            )

    def _in_shard(self, uid: str) -> bool:
        count = self._settings.shard_count
        # crc32, not hash(): every replica must compute the same share for a uid.
        return count == 1 or zlib.crc32(uid.encode()) % count == self._settings.shard_index

    def _input_error(self, kind: str, detail: str, **fields: Any) -> None:
        self._metrics.input_errors.labels(source=SOURCE, kind=kind).inc()
        log.warning("pod_input_error", scope=self.scope.label, kind=kind, detail=detail, **fields)


class _LineSplitter:
    """Whole lines out of a stream's chunks; a line may span several chunks."""

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self._parts: list[bytes] = []  # of the line not yet ended, joined once it ends
        self._size = 0
        self._limit = limit

    def feed(self, chunk: bytes) -> list[bytes]:
        if b"\n" not in chunk:
            self._hold(chunk)
            return []
        if self._parts:
            chunk = b"".join((*self._parts, chunk))
            self._parts, self._size = [], 0
        lines = chunk.split(b"\n")
        self._hold(lines.pop())
        return [line for line in lines if line]

    def rest(self) -> bytes:
        rest = b"".join(self._parts)
        self._parts, self._size = [], 0
        return rest

    def _hold(self, part: bytes) -> None:
        if not part:
            return
        self._parts.append(part)
        self._size += len(part)
        if self._size > self._limit:
            # A ValueError, as for any undecodable stream: the watch is reopened.
            raise ValueError(f"a watch event is longer than {self._limit} bytes")


class _StallGuard:
    """`asyncio.timeout` that fires when the stream stays silent while a line is awaited,
    and reports its expiry as a stall.

    Marking a wait costs a clock read: the one timer re-arms itself lazily, once per
    `seconds` at most, instead of being rescheduled for every line. Other timeouts are
    `TimeoutError`s too; only this one means "silent stream".
    """

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._timeout = asyncio.timeout(None)
        self._loop = asyncio.get_running_loop()
        self._waiting_since: float | None = None
        self._check: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        """A line is awaited from now on."""
        self._waiting_since = self._loop.time()

    def disarm(self) -> None:
        """A line is being handled (it may wait on a full emitter queue: not a stall)."""
        self._waiting_since = None

    def _on_check(self) -> None:
        since = self._waiting_since
        now = self._loop.time()
        if since is not None and now - since >= self._seconds:
            self._timeout.reschedule(now)  # expire: cancels the watch like any timeout
            return
        next_check = (since if since is not None else now) + self._seconds
        self._check = self._loop.call_at(next_check, self._on_check)

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()
        self._check = self._loop.call_at(self._loop.time() + self._seconds, self._on_check)

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if self._check is not None:
            self._check.cancel()
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError as error:
            if self._timeout.expired():
                raise _StalledError from error
            raise
        return False


def _get(obj: object, key: str) -> Any:
    # Decoded JSON objects are dicts: the `Mapping` ABC check costs several times more.
    return obj.get(key) if isinstance(obj, dict) else None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
