"""Deterministic event ids: the same observation always gets the same id, on any replica."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping

# sha1 state after the namespace, copied per id: cheaper than a new hash object (with
# OpenSSL 3, each new one looks the algorithm up again).
_URL_NAMESPACE_SHA1 = hashlib.sha1(uuid.NAMESPACE_URL.bytes, usedforsecurity=False)
_encode_string = json.encoder.encode_basestring_ascii
# RFC 4122 variant and version 5 bits, as `uuid.UUID(..., version=5)` sets them.
_KEEP_BITS = ~((0xC000 << 48) | (0xF000 << 64))
_VERSION_5_BITS = (0x8000 << 48) | (5 << 76)


def stable_id(fields: Mapping[str, object]) -> uuid.UUID:
    """uuid5 over the fields as sorted JSON, with Python's default separators.

    With fields ``{"phase", "restart_count", "uid"}`` this is exactly the formula of the
    reference Kubernetes observer, so both deduplicate against each other on the server.
    """
    return uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(fields, sort_keys=True))


def pod_event_id(*, uid: str, phase: str, restart_count: int) -> uuid.UUID:
    # `stable_id` spelled out for these three fields: the same text, built without a
    # JSONEncoder per call (this runs once per pod transition).
    text = (
        f'{{"phase": {_encode_string(phase)}, "restart_count": {int(restart_count)}, '
        f'"uid": {_encode_string(uid)}}}'
    )
    sha1 = _URL_NAMESPACE_SHA1.copy()
    sha1.update(text.encode())
    return _uuid_from_int((int.from_bytes(sha1.digest()[:16]) & _KEEP_BITS) | _VERSION_5_BITS)


def diagnosed_pod_event_id(
    *, uid: str, phase: str, restart_count: int, diagnosis: str | None
) -> uuid.UUID:
    """The id current prefect-kubernetes gives a pod event: the contract's fields plus the
    diagnosis category (null when there is none), so a change of diagnosis is a new event."""
    return stable_id(
        {"diagnosis": diagnosis, "phase": phase, "restart_count": restart_count, "uid": uid}
    )


def _uuid_from_int(value: int) -> uuid.UUID:
    # What `UUID.__init__` ends with, without its argument checks (a third of the cost of
    # an id); Python 3.14 has this as `UUID._from_int`. A test compares with `uuid.uuid5`.
    made = object.__new__(uuid.UUID)
    object.__setattr__(made, "int", value)
    object.__setattr__(made, "is_safe", uuid.SafeUUID.unknown)
    return made


def container_event_id(
    *, container_id: str, status: str, state_marks: Mapping[str, str]
) -> uuid.UUID:
    """Same container, same status, same state timestamps: same id."""
    return stable_id({"container_id": container_id, "status": status, **state_marks})
