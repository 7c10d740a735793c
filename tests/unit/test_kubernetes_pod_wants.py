"""What a flow run's pod asks of the run, and whose logs are read when it crashed."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from infra_observer.observations import Diagnosis, Wanted
from infra_observer.sources.kubernetes.lifecycle import log_containers, owner_kinds, pod_wants

OOM = Diagnosis("OOMKilled", "ERROR", "Container prefect-job was OOM-killed.", "Raise the limit.")


class Row(NamedTuple):
    name: str
    phase: str
    owners: tuple[str, ...]
    diagnosis: Diagnosis | None
    wants: Wanted | None
    message: str


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
    Row(name="running", phase="Running", owners=("Job",), diagnosis=None, wants=None, message=""),
    Row(
        name="a Job's pod failed: the Job decides",
        phase="Failed",
        owners=("Job",),
        diagnosis=OOM,
        wants=None,
        message="",
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
    Row(name="succeeded", phase="Succeeded", owners=(), diagnosis=None, wants=None, message=""),
    Row(name="unknown", phase="Unknown", owners=(), diagnosis=None, wants=None, message=""),
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


def test_owner_kinds_skip_what_is_malformed() -> None:
    metadata = {"ownerReferences": [{"kind": "Job", "name": "run"}, "junk", {"name": "x"}]}
    assert owner_kinds(metadata) == ("Job",)
    assert owner_kinds({"ownerReferences": "Job"}) == ()
    assert owner_kinds({}) == ()


def test_the_flow_container_logs_come_first_then_the_others_in_order() -> None:
    spec = {"containers": [{"name": "sidecar"}, {"name": "prefect-job"}, {"name": "proxy"}, {}]}
    assert log_containers(spec) == ["prefect-job", "sidecar", "proxy"]
    assert log_containers({"containers": [{"name": "flow"}]}) == ["flow"]
