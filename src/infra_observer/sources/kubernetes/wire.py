"""Decoding of watch lines and list pages: only the fields `translate` and the loop read.

Most of a worker's pod is managedFields, spec and conditions' times that nothing here
reads. msgspec decodes against the typed shape below and skips every other field without
building it: faster than a full decode, and a list page takes a fraction of the memory
(docs/performance.md has the figures). The result is
still plain dicts and lists, so `translate` reads them exactly as it would a full object.

`translate` includes the diagnosis (`diagnosis.py`): container names, waiting and
termination reasons and exit codes, and condition and status messages are decoded for it.

The shape only names fields; their values are typed `Any` wherever `translate` checks
them itself, so a pod with an odd value still reaches `translate`, which says what is
wrong with it. Should a line not fit even that shape (say `metadata` is a string), it is
decoded in full instead and goes the same way: nothing is lost to the fast path.

`metadata.ownerReferences` is kept undecoded (`msgspec.Raw`, a slice of the line): only a
Failed pod's owners are read (`owner_references`). Jobs get a shape of their own, with
what `jobs.read_job` reads.
"""

from __future__ import annotations

from typing import Any, TypedDict

import msgspec
import orjson


class _Running(TypedDict, total=False):
    startedAt: Any


class _Exit(TypedDict, total=False):
    """What the diagnosis reads of a termination (not its message: up to 4 KB of the
    container's own text)."""

    exitCode: Any
    reason: Any


class _Terminated(_Exit, total=False):
    finishedAt: Any


class _Waiting(TypedDict, total=False):
    reason: Any
    message: Any


class _ContainerState(TypedDict, total=False):
    running: _Running
    terminated: _Terminated
    waiting: _Waiting


class _LastState(TypedDict, total=False):
    terminated: _Exit


class _ContainerStatus(TypedDict, total=False):
    name: Any
    restartCount: Any
    state: _ContainerState
    lastState: _LastState


class _Condition(TypedDict, total=False):
    type: Any
    status: Any
    reason: Any
    message: Any


class _PodStatus(TypedDict, total=False):
    phase: Any
    reason: Any
    message: Any
    startTime: Any
    conditions: list[_Condition]
    containerStatuses: list[_ContainerStatus]
    initContainerStatuses: list[_ContainerStatus]


class _Metadata(TypedDict, total=False):
    uid: Any
    name: Any
    namespace: Any
    labels: Any
    resourceVersion: Any
    creationTimestamp: Any
    ownerReferences: msgspec.Raw


class _Pod(TypedDict, total=False):
    metadata: _Metadata
    status: _PodStatus


class _WatchEvent(TypedDict, total=False):
    type: Any
    object: _Pod


# `continue` is a keyword, hence the functional syntax.
_PodListMetadata = TypedDict(
    "_PodListMetadata", {"resourceVersion": Any, "continue": Any}, total=False
)


class _PodList(TypedDict, total=False):
    metadata: _PodListMetadata
    items: list[_Pod]


class _JobMetadata(TypedDict, total=False):
    uid: Any
    name: Any
    namespace: Any
    labels: Any
    resourceVersion: Any


class _JobSpec(TypedDict, total=False):
    backoffLimit: Any
    completions: Any


class _JobStatus(TypedDict, total=False):
    conditions: list[_Condition]
    failed: Any
    succeeded: Any


class _Job(TypedDict, total=False):
    metadata: _JobMetadata
    spec: _JobSpec
    status: _JobStatus


class _JobWatchEvent(TypedDict, total=False):
    type: Any
    object: _Job


class _JobList(TypedDict, total=False):
    metadata: _PodListMetadata
    items: list[_Job]


def owner_references(metadata: Any) -> Any:
    """A pod's `metadata.ownerReferences`, decoded now if the fast path left it raw."""
    owners = metadata.get("ownerReferences") if isinstance(metadata, dict) else None
    if isinstance(owners, msgspec.Raw):
        try:
            return msgspec.json.decode(owners)
        except msgspec.DecodeError:  # the line was JSON: cannot happen, but never raise
            return None
    return owners


class JobDecoder:
    """Like `Decoder`, for Jobs: the pod template, most of a Job, is never built."""

    def __init__(self) -> None:
        self._line = msgspec.json.Decoder(_JobWatchEvent)
        self._list = msgspec.json.Decoder(_JobList)

    def watch_line(self, line: bytes) -> Any:
        try:
            message: Any = self._line.decode(line)
        except msgspec.DecodeError:
            return orjson.loads(line)
        if message.get("type") == "ERROR":
            return orjson.loads(line)
        return message

    def job_list(self, body: bytes) -> Any:
        try:
            return self._list.decode(body)
        except msgspec.DecodeError:
            return orjson.loads(body)


class Decoder:
    """Reusable decoders (building one compiles the shape; decoding is then cheap)."""

    def __init__(self) -> None:
        self._line = msgspec.json.Decoder(_WatchEvent)
        self._list = msgspec.json.Decoder(_PodList)

    def watch_line(self, line: bytes) -> Any:
        """One watch event: `type` and `object`. ERROR events keep their whole Status.

        Raises `ValueError` (orjson's `JSONDecodeError`) when the line is not JSON.
        """
        try:
            message: Any = self._line.decode(line)
        except msgspec.DecodeError:  # not JSON, or not the shape: orjson says which
            return orjson.loads(line)
        if message.get("type") == "ERROR":
            return orjson.loads(line)  # a Status object: code, reason and message
        return message

    def pod_list(self, body: bytes) -> Any:
        """A PodList page: `metadata` (resourceVersion, continue) and `items`."""
        try:
            return self._list.decode(body)
        except msgspec.DecodeError:
            return orjson.loads(body)
