"""What a flow run's pod asks of the run, and whose logs are read when it crashed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import NamedTuple

import pytest

from infra_observer.observations import Diagnosis, Wanted
from infra_observer.sources.kubernetes.lifecycle import (
    log_containers,
    owner_kinds,
    pod_observation,
    pod_past_pending,
    pod_wants,
)
from infra_observer.sources.kubernetes.wire import Decoder, owner_references

OOM = Diagnosis("OOMKilled", "ERROR", "Container prefect-job was OOM-killed.", "Raise the limit.")
PULL = Diagnosis("ImagePullError", "ERROR", "Image x cannot be pulled.", "Fix the image.")
LOOP = Diagnosis("CrashLoopBackOff", "ERROR", "Container keeps failing.", "Read its logs.")


class Row(NamedTuple):
    name: str
    phase: str
    owners: tuple[str, ...]
    diagnosis: Diagnosis | None
    wants: Wanted | None
    message: str
    past_pending: bool = False
    """A pending proposal of the run still queued is withdrawn."""


ROWS = (
    Row(
        name="pending",
        phase="Pending",
        owners=("Job",),
        diagnosis=None,
        wants="pending",
        message="Kubernetes pod jobs/run-1 is pending.",
    ),
    Row(
        name="pending with a diagnosis",
        phase="Pending",
        owners=("Job",),
        diagnosis=Diagnosis("ImagePullError", "ERROR", "Image x cannot be pulled.", "Fix it."),
        wants="pending",
        message="Kubernetes pod jobs/run-1 is pending. Image x cannot be pulled.",
    ),
    Row(
        name="running",
        phase="Running",
        owners=("Job",),
        diagnosis=None,
        wants=None,
        message="",
        past_pending=True,
    ),
    Row(
        name="a bare pod running",
        phase="Running",
        owners=(),
        diagnosis=LOOP,
        wants=None,
        message="",
        past_pending=True,
    ),
    Row(
        name="a Job's pod failed: the Job decides",
        phase="Failed",
        owners=("Job",),
        diagnosis=OOM,
        wants=None,
        message="",
        past_pending=True,
    ),
    Row(
        name="a bare pod failed",
        phase="Failed",
        owners=(),
        diagnosis=OOM,
        wants="crashed",
        message="Kubernetes pod jobs/run-1 failed. Container prefect-job was OOM-killed.",
    ),
    Row(
        name="a pod of another owner failed",
        phase="Failed",
        owners=("ReplicaSet",),
        diagnosis=None,
        wants="crashed",
        message="Kubernetes pod jobs/run-1 failed.",
    ),
    Row(
        name="succeeded",
        phase="Succeeded",
        owners=("Job",),
        diagnosis=None,
        wants=None,
        message="",
        past_pending=True,
    ),
    Row(
        name="unknown: the node stopped reporting, nothing is told",
        phase="Unknown",
        owners=("Job",),
        diagnosis=None,
        wants=None,
        message="",
    ),
)


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_each_phase_asks_what_the_rules_say(row: Row) -> None:
    wants = pod_wants(
        phase=row.phase,
        namespace="jobs",
        name="run-1",
        owner_kinds=row.owners,
        diagnosis=row.diagnosis,
    )
    assert wants == (row.wants, row.message)
    assert pod_past_pending(phase=row.phase, owner_kinds=row.owners) is row.past_pending


def test_owner_kinds_skip_what_is_malformed() -> None:
    metadata = {"ownerReferences": [{"kind": "Job", "name": "run"}, "junk", {"name": "x"}]}
    assert owner_kinds(metadata) == ("Job",)
    assert owner_kinds({"ownerReferences": "Job"}) == ()
    assert owner_kinds({}) == ()


def test_the_flow_container_logs_come_first_then_the_others_in_order() -> None:
    spec = {"containers": [{"name": "sidecar"}, {"name": "prefect-job"}, {"name": "proxy"}, {}]}
    assert log_containers(spec) == ["prefect-job", "sidecar", "proxy"]
    assert log_containers({"containers": [{"name": "flow"}]}) == ["flow"]


RUN = uuid.UUID("0b5f1a6e-8c8f-4a64-9d0e-3f1f3a0d2b11")


async def _no_logs(lines: int) -> Sequence[str]:
    return []


class Told(NamedTuple):
    name: str
    phase: str
    owners: tuple[str, ...]
    diagnosis: Diagnosis | None
    diagnosis_changed: bool
    wants: Wanted | None
    told_diagnosis: Diagnosis | None
    """What is handed over to be logged; `absent` rows expect no observation at all."""
    absent: bool = False
    crash_logs: bool = False
    past_pending: bool = False


TOLD = (
    Told(
        name="pending, first seen",
        phase="Pending",
        owners=("Job",),
        diagnosis=None,
        diagnosis_changed=False,
        wants="pending",
        told_diagnosis=None,
    ),
    Told(
        name="pending, a new diagnosis is handed over to be logged",
        phase="Pending",
        owners=("Job",),
        diagnosis=PULL,
        diagnosis_changed=True,
        wants="pending",
        told_diagnosis=PULL,
    ),
    Told(
        name="pending, the same diagnosis again is in the message only",
        phase="Pending",
        owners=("Job",),
        diagnosis=PULL,
        diagnosis_changed=False,
        wants="pending",
        told_diagnosis=None,
    ),
    Told(
        name="a Job's pod OOM-killed: the diagnosis, and past pending",
        phase="Failed",
        owners=("Job",),
        diagnosis=OOM,
        diagnosis_changed=True,
        wants=None,
        told_diagnosis=OOM,
        past_pending=True,
    ),
    Told(
        name="a Job's pod failed with nothing new: past pending only",
        phase="Failed",
        owners=("Job",),
        diagnosis=OOM,
        diagnosis_changed=False,
        wants=None,
        told_diagnosis=None,
        past_pending=True,
    ),
    Told(
        name="a bare pod failed: crashed, with its logs",
        phase="Failed",
        owners=(),
        diagnosis=OOM,
        diagnosis_changed=True,
        wants="crashed",
        told_diagnosis=OOM,
        crash_logs=True,
    ),
    Told(
        name="running with a crash loop: the diagnosis, and past pending",
        phase="Running",
        owners=("Job",),
        diagnosis=LOOP,
        diagnosis_changed=True,
        wants=None,
        told_diagnosis=LOOP,
        past_pending=True,
    ),
    Told(
        name="running, nothing new: past pending only",
        phase="Running",
        owners=("Job",),
        diagnosis=None,
        diagnosis_changed=False,
        wants=None,
        told_diagnosis=None,
        past_pending=True,
    ),
    Told(
        name="succeeded: past pending",
        phase="Succeeded",
        owners=("Job",),
        diagnosis=None,
        diagnosis_changed=False,
        wants=None,
        told_diagnosis=None,
        past_pending=True,
    ),
    Told(
        name="unknown, nothing new: nothing",
        phase="Unknown",
        owners=("Job",),
        diagnosis=None,
        diagnosis_changed=False,
        wants=None,
        told_diagnosis=None,
        absent=True,
    ),
    Told(
        name="unknown, the diagnosis went away: nothing",
        phase="Unknown",
        owners=(),
        diagnosis=None,
        diagnosis_changed=True,
        wants=None,
        told_diagnosis=None,
        absent=True,
    ),
)


@pytest.mark.parametrize("row", TOLD, ids=lambda row: row.name)
def test_a_pod_change_tells_the_lifecycle_what_the_rules_say(row: Told) -> None:
    told = pod_observation(
        flow_run_id=RUN,
        phase=row.phase,
        namespace="jobs",
        name="run-1",
        owner_kinds=row.owners,
        diagnosis=row.diagnosis,
        diagnosis_changed=row.diagnosis_changed,
        crash_logs=_no_logs,
    )
    if row.absent:
        assert told is None
        return
    assert told is not None
    assert (told.flow_run_id, told.source) == (RUN, "kubernetes")
    assert (told.wants, told.diagnosis) == (row.wants, row.told_diagnosis)
    assert told.past_pending is row.past_pending
    expected_message = pod_wants(
        phase=row.phase,
        namespace="jobs",
        name="run-1",
        owner_kinds=row.owners,
        diagnosis=row.diagnosis,
    )[1]
    assert told.message == expected_message
    assert (told.crash_logs is _no_logs) == row.crash_logs


class Owners(NamedTuple):
    name: str
    line: bytes
    kinds: tuple[str, ...]


OWNERS = (
    Owners(
        name="a Job's pod, on the fast path",
        line=b'{"type":"MODIFIED","object":{"metadata":{"uid":"u","ownerReferences":'
        b'[{"apiVersion":"batch/v1","kind":"Job","name":"run","uid":"j"}]}}}',
        kinds=("Job",),
    ),
    Owners(
        name="a bare pod",
        line=b'{"type":"MODIFIED","object":{"metadata":{"uid":"u"}}}',
        kinds=(),
    ),
    Owners(
        name="a line off the shape, decoded in full",
        line=b'{"type":"MODIFIED","object":{"metadata":{"uid":"u","ownerReferences":'
        b'[{"kind":"Job"}]},"status":"odd"}}',
        kinds=("Job",),
    ),
    Owners(
        name="owners that are not a list",
        line=b'{"type":"MODIFIED","object":{"metadata":{"uid":"u","ownerReferences":"Job"}}}',
        kinds=(),
    ),
)


@pytest.mark.parametrize("row", OWNERS, ids=lambda row: row.name)
def test_a_failed_pods_owners_are_read_from_what_the_decoder_left(row: Owners) -> None:
    metadata = Decoder().watch_line(row.line)["object"]["metadata"]
    assert owner_kinds({"ownerReferences": owner_references(metadata)}) == row.kinds
