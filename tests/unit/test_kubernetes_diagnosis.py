"""The pod diagnosis: every category, every kubelet waiting and terminated reason, and what
must never change the category (message text, node counts).

The reasons are the kubelet's: waiting reasons from pkg/kubelet/images/types.go (image
pulls), pkg/kubelet/container/sync_result.go (sync errors) and kuberuntime
(ContainerCreating, PodInitializing); terminated reasons from the runtime and kubelet
(Completed, Error, OOMKilled, ContainerCannotRun, StartError, ContainerStatusUnknown);
`DeadlineExceeded` is a pod reason (activeDeadlineSeconds). docs/sources/kubernetes.md
carries the same table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra_observer.sources.kubernetes.diagnosis import (
    EVICTION_REASONS,
    IMAGE_PULL_REASONS,
    RESOLUTIONS,
    Category,
    diagnose,
    explain,
)
from infra_observer.sources.kubernetes.wire import Decoder


def container(
    *,
    waiting: str | None = None,
    terminated: str | None = None,
    exit_code: int | None = None,
    last_reason: str | None = None,
    last_exit_code: int | None = None,
    restarts: int = 0,
    message: str | None = None,
) -> dict[str, Any]:
    """One containerStatuses entry as the kubelet writes it (`lastState` {} until a restart)."""
    state: dict[str, Any] = {"running": {"startedAt": "2026-01-01T10:00:05Z"}}
    if waiting is not None:
        state = {"waiting": {"reason": waiting, **({"message": message} if message else {})}}
    if terminated is not None:
        state = {"terminated": {"reason": terminated, "exitCode": exit_code}}
    last: dict[str, Any] = {}
    if last_reason is not None:
        last = {"terminated": {"reason": last_reason, "exitCode": last_exit_code}}
    return {
        "name": "prefect-job",
        "state": state,
        "lastState": last,
        "restartCount": restarts,
    }


def status(phase: str, *containers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"phase": phase, "containerStatuses": list(containers), **extra}


def unschedulable(message: str) -> dict[str, Any]:
    condition = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
    }
    return status("Pending", conditions=[condition])


@dataclass(frozen=True)
class Case:
    name: str
    status: dict[str, Any]
    category: Category | None


# Every kubelet waiting reason.
WAITING = [
    Case(
        name="ErrImagePull",
        status=status("Pending", container(waiting="ErrImagePull")),
        category="ImagePullError",
    ),
    Case(
        name="ImagePullBackOff",
        status=status("Pending", container(waiting="ImagePullBackOff")),
        category="ImagePullError",
    ),
    Case(
        name="ErrImageNeverPull",
        status=status("Pending", container(waiting="ErrImageNeverPull")),
        category="ImagePullError",
    ),
    Case(
        name="InvalidImageName",
        status=status("Pending", container(waiting="InvalidImageName")),
        category="ImagePullError",
    ),
    Case(
        name="ImageInspectError",
        status=status("Pending", container(waiting="ImageInspectError")),
        category="ImagePullError",
    ),
    Case(
        name="RegistryUnavailable",
        status=status("Pending", container(waiting="RegistryUnavailable")),
        category="ImagePullError",
    ),
    Case(
        name="SignatureValidationFailed",
        status=status("Pending", container(waiting="SignatureValidationFailed")),
        category="ImagePullError",
    ),
    Case(
        name="CrashLoopBackOff",
        status=status(
            "Running",
            container(
                waiting="CrashLoopBackOff", restarts=2, last_reason="Error", last_exit_code=3
            ),
        ),
        category="CrashLoopBackOff",
    ),
    Case(
        name="CrashLoopBackOff alone",
        status=status("Running", container(waiting="CrashLoopBackOff")),
        category="CrashLoopBackOff",
    ),
    Case(
        name="ContainerCreating",
        status=status("Pending", container(waiting="ContainerCreating")),
        category=None,
    ),
    Case(
        name="PodInitializing",
        status=status("Pending", container(waiting="PodInitializing")),
        category=None,
    ),
    Case(
        name="CreateContainerConfigError",
        status=status("Pending", container(waiting="CreateContainerConfigError")),
        category=None,
    ),
    Case(
        name="CreateContainerError",
        status=status("Pending", container(waiting="CreateContainerError")),
        category=None,
    ),
    Case(
        name="RunContainerError",
        status=status("Pending", container(waiting="RunContainerError")),
        category=None,
    ),
    Case(
        name="PreCreateHookError",
        status=status("Pending", container(waiting="PreCreateHookError")),
        category=None,
    ),
    Case(
        name="PreStartHookError",
        status=status("Pending", container(waiting="PreStartHookError")),
        category=None,
    ),
    Case(
        name="PostStartHookError",
        status=status("Pending", container(waiting="PostStartHookError")),
        category=None,
    ),
    Case(
        name="ContainerNotFound",
        status=status("Pending", container(waiting="ContainerNotFound")),
        category=None,
    ),
    Case(
        name="CreatePodSandboxError",
        status=status("Pending", container(waiting="CreatePodSandboxError")),
        category=None,
    ),
    Case(
        name="ConfigPodSandboxError",
        status=status("Pending", container(waiting="ConfigPodSandboxError")),
        category=None,
    ),
    Case(
        name="KillPodSandboxError",
        status=status("Pending", container(waiting="KillPodSandboxError")),
        category=None,
    ),
]

# Every terminated reason, with restartPolicy Never (no restart) and Always (restarted).
TERMINATED = [
    Case(
        name="Completed",
        status=status("Succeeded", container(terminated="Completed", exit_code=0)),
        category=None,
    ),
    Case(
        name="Error, never restarted",
        status=status("Failed", container(terminated="Error", exit_code=3)),
        category=None,
    ),
    Case(
        name="OOMKilled",
        status=status("Failed", container(terminated="OOMKilled", exit_code=137)),
        category="OOMKilled",
    ),
    Case(
        name="ContainerCannotRun",
        status=status("Failed", container(terminated="ContainerCannotRun", exit_code=128)),
        category=None,
    ),
    Case(
        name="StartError",
        status=status("Failed", container(terminated="StartError", exit_code=128)),
        category=None,
    ),
    Case(
        name="ContainerStatusUnknown",
        status=status("Failed", container(terminated="ContainerStatusUnknown", exit_code=137)),
        category=None,
    ),
    Case(
        name="DeadlineExceeded",
        status=status(
            "Failed", container(terminated="Error", exit_code=137), reason="DeadlineExceeded"
        ),
        category=None,
    ),
    Case(
        name="Error, restarting",
        status=status("Running", container(terminated="Error", exit_code=3, restarts=1)),
        category="CrashLoopBackOff",
    ),
    Case(
        name="Error in lastState, running again",
        status=status("Running", container(last_reason="Error", last_exit_code=3, restarts=4)),
        category="CrashLoopBackOff",
    ),
    Case(
        name="StartError in lastState",
        status=status(
            "Running",
            container(
                waiting="RunContainerError",
                last_reason="StartError",
                last_exit_code=128,
                restarts=2,
            ),
        ),
        category="CrashLoopBackOff",
    ),
    Case(
        name="Completed in lastState",
        status=status("Running", container(last_reason="Completed", last_exit_code=0, restarts=1)),
        category=None,
    ),
    Case(
        name="OOMKilled in lastState",
        status=status(
            "Running", container(last_reason="OOMKilled", last_exit_code=137, restarts=1)
        ),
        category="OOMKilled",
    ),
    Case(
        name="OOMKilled, restarted, succeeded",
        status=status(
            "Succeeded",
            container(
                terminated="Completed",
                exit_code=0,
                last_reason="OOMKilled",
                last_exit_code=137,
                restarts=1,
            ),
        ),
        category=None,
    ),
]

POD_LEVEL = [
    Case(
        name="status.reason Evicted", status=status("Failed", reason="Evicted"), category="Evicted"
    ),
    *(
        Case(
            name=f"DisruptionTarget {reason}",
            status=status(
                "Failed",
                conditions=[{"type": "DisruptionTarget", "status": "True", "reason": reason}],
            ),
            category="Evicted",
        )
        for reason in sorted(EVICTION_REASONS)
    ),
    Case(
        name="DeletionByPodGC is no eviction",
        status=status(
            "Failed",
            container(terminated="Error", exit_code=1),
            conditions=[
                {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC"}
            ],
        ),
        category=None,
    ),
    Case(
        name="evicted while OOMKilled",
        status=status("Failed", container(terminated="OOMKilled", exit_code=137), reason="Evicted"),
        category="Evicted",
    ),
    Case(
        name="insufficient memory",
        status=unschedulable("0/3 nodes are available: 3 Insufficient memory."),
        category="Unschedulable.InsufficientResources",
    ),
    Case(
        name="insufficient cpu and gpu",
        status=unschedulable(
            "0/5 nodes are available: 2 Insufficient cpu, 3 Insufficient nvidia.com/gpu."
        ),
        category="Unschedulable.InsufficientResources",
    ),
    Case(
        name="node affinity",
        status=unschedulable(
            "0/3 nodes are available: 3 node(s) didn't match Pod's node "
            "affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not "
            "helpful for scheduling."
        ),
        category="Unschedulable.NodeAffinity",
    ),
    Case(
        name="node selector (older)",
        status=unschedulable("0/2 nodes are available: 2 node(s) didn't match node selector."),
        category="Unschedulable.NodeAffinity",
    ),
    Case(
        name="untolerated taint",
        status=unschedulable(
            "0/1 nodes are available: 1 node(s) had untolerated taint "
            "{node-role.kubernetes.io/control-plane: }."
        ),
        category="Unschedulable.Taint",
    ),
    Case(
        name="taint (older)",
        status=unschedulable(
            "0/1 nodes are available: 1 node(s) had taint {dedicated: "
            "gpu}, that the pod didn't tolerate."
        ),
        category="Unschedulable.Taint",
    ),
    Case(
        name="resources before taints",
        status=unschedulable(
            "0/4 nodes are available: 1 node(s) had untolerated taint "
            "{a: b}, 3 Insufficient memory."
        ),
        category="Unschedulable.InsufficientResources",
    ),
    Case(
        name="other rejection",
        status=unschedulable(
            "0/2 nodes are available: 2 node(s) had volume node affinity conflict."
        ),
        category="Unschedulable",
    ),
    Case(
        name="no message",
        status=status(
            "Pending",
            conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
        ),
        category="Unschedulable",
    ),
    Case(
        name="unbound claim",
        status=unschedulable(
            "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims."
        ),
        category="Unschedulable",
    ),
    Case(
        name="scheduled",
        status=status(
            "Pending",
            container(waiting="ContainerCreating"),
            conditions=[{"type": "PodScheduled", "status": "True"}],
        ),
        category=None,
    ),
    Case(
        name="SchedulingGated",
        status=status(
            "Pending",
            conditions=[{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}],
        ),
        category=None,
    ),
    Case(name="healthy", status=status("Running", container()), category=None),
    Case(
        name="pull error beats crash loop",
        status=status(
            "Running", container(waiting="CrashLoopBackOff"), container(waiting="ImagePullBackOff")
        ),
        category="ImagePullError",
    ),
    Case(
        name="OOM beats pull error",
        status=status(
            "Running",
            container(waiting="ImagePullBackOff"),
            container(last_reason="OOMKilled", last_exit_code=137, restarts=1),
        ),
        category="OOMKilled",
    ),
    Case(
        name="init container",
        status={"phase": "Pending", "initContainerStatuses": [container(waiting="ErrImagePull")]},
        category="ImagePullError",
    ),
    Case(name="Unknown phase", status={"phase": "Unknown"}, category=None),
]

CASES = [*WAITING, *TERMINATED, *POD_LEVEL]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_category(case: Case) -> None:
    assert diagnose(case.status) == case.category
    explained = explain(case.status)
    if case.category is None:
        assert explained is None
    else:
        assert explained is not None
        assert explained.category == case.category
        assert (explained.level, explained.resolution) == RESOLUTIONS[case.category]
        assert explained.summary
        assert "\n" not in explained.summary


def test_every_category_and_image_pull_reason_has_a_case() -> None:
    assert {case.category for case in CASES} - {None} == set(RESOLUTIONS)
    assert {case.name for case in WAITING} >= IMAGE_PULL_REASONS


def test_the_two_image_pull_reasons_the_kubelet_alternates_are_one_category() -> None:
    pulling = [
        status("Pending", container(waiting=r)) for r in ("ErrImagePull", "ImagePullBackOff")
    ]
    assert {diagnose(s) for s in pulling} == {"ImagePullError"}


def test_a_crash_loop_stays_one_diagnosis_across_restarts() -> None:
    """What a real kubelet wrote for `exit 3` with restartPolicy Always, sample by sample:
    the diagnosis must not depend on catching the brief `CrashLoopBackOff`."""
    samples = [
        container(
            terminated="Error", exit_code=3, restarts=1, last_reason="Error", last_exit_code=3
        ),
        container(waiting="CrashLoopBackOff", restarts=2, last_reason="Error", last_exit_code=3),
        container(restarts=2, last_reason="Error", last_exit_code=3),
        container(
            terminated="Error", exit_code=3, restarts=3, last_reason="Error", last_exit_code=3
        ),
    ]
    assert {diagnose(status("Running", sample)) for sample in samples} == {"CrashLoopBackOff"}


def test_summaries_are_built_from_the_pod() -> None:
    pull = explain(
        status("Pending", container(waiting="ErrImagePull", message="pull\naccess denied"))
    )
    assert pull is not None
    assert (
        pull.summary
        == "Container prefect-job cannot pull its image (ErrImagePull): pull access denied"
    )
    oom = explain(status("Failed", container(terminated="OOMKilled", exit_code=137)))
    assert oom is not None
    assert oom.level == "ERROR"
    assert "prefect-job" in oom.summary
    assert "137" in oom.summary
    crash = explain(status("Running", container(last_reason="Error", last_exit_code=3, restarts=5)))
    assert crash is not None
    assert "exit code 3" in crash.summary
    assert "5 times" in crash.summary
    message = "0/3 nodes are available: 3 Insufficient memory."
    unfit = explain(unschedulable(message))
    assert unfit is not None
    assert unfit.summary == f"Pod cannot be scheduled: {message}"
    evicted = explain(status("Failed", reason="Evicted", message="The node was low on memory."))
    assert evicted is not None
    assert evicted.summary == "Pod was evicted (Evicted): The node was low on memory."


def test_a_long_message_is_cut_to_one_readable_line() -> None:
    found = explain(status("Pending", container(waiting="ErrImagePull", message="x " * 1000)))
    assert found is not None
    assert len(found.summary) <= 300


# --- properties ------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
_reasons = st.sampled_from(
    [*sorted(IMAGE_PULL_REASONS), "CrashLoopBackOff", "OOMKilled", "Error", "Completed", "Evicted"]
)
_containers = st.builds(
    container,
    waiting=st.none() | _reasons,
    terminated=st.none() | _reasons,
    exit_code=st.none() | st.integers(-1, 255),
    last_reason=st.none() | _reasons,
    last_exit_code=st.none() | st.integers(-1, 255) | st.just(True),
    restarts=st.integers(-1, 5),
    message=st.none() | st.text(max_size=20),
)
_statuses = st.fixed_dictionaries(
    {"phase": st.sampled_from(["Pending", "Running", "Succeeded", "Failed", "Unknown"]) | _json},
    optional={
        "reason": st.sampled_from(["Evicted", "DeadlineExceeded"]) | _json,
        "message": _json,
        "conditions": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "type": st.sampled_from(["PodScheduled", "DisruptionTarget"]) | _json,
                    "status": st.sampled_from(["True", "False"]) | _json,
                    "reason": st.sampled_from(["Unschedulable", *EVICTION_REASONS]) | _json,
                    "message": _json,
                },
            )
            | _json,
            max_size=3,
        )
        | _json,
        "containerStatuses": st.lists(_containers | _json, max_size=3) | _json,
        "initContainerStatuses": st.lists(_containers | _json, max_size=2) | _json,
    },
)


@given(pod_status=_statuses | _json)
def test_any_status_gives_a_category_or_none_without_raising(pod_status: object) -> None:
    category = diagnose(pod_status)
    assert category is None or category in RESOLUTIONS
    explained = explain(pod_status)
    assert (explained.category if explained else None) == category


@given(
    counts=st.lists(st.integers(1, 5000), min_size=4, max_size=4),
    kinds=st.lists(st.sampled_from(["memory", "cpu", "ephemeral-storage"]), min_size=1),
)
def test_node_counts_and_resource_names_do_not_change_the_category(
    counts: list[int], kinds: list[str]
) -> None:
    total, insufficient, tainted, other = counts
    message = (
        f"0/{total} nodes are available: "
        + ", ".join(f"{insufficient} Insufficient {kind}" for kind in kinds)
        + f", {tainted} node(s) had untolerated taint {{a: b}}. preemption: 0/{other} nodes "
        "are available."
    )
    assert diagnose(unschedulable(message)) == "Unschedulable.InsufficientResources"


@given(message=st.text(max_size=60), restarts=st.integers(1, 1000))
def test_container_messages_and_restart_counts_do_not_change_the_category(
    message: str, restarts: int
) -> None:
    pulling = status("Pending", container(waiting="ImagePullBackOff", message=message))
    assert diagnose(pulling) == "ImagePullError"
    crashing = container(restarts=restarts, last_reason="Error", last_exit_code=1)
    assert diagnose(status("Running", crashing)) == "CrashLoopBackOff"


@settings(max_examples=300)
@given(pod_status=_statuses)
def test_the_watch_decoder_keeps_every_field_the_diagnosis_reads(pod_status: object) -> None:
    # The decoder skips what it does not name: a field missing from its shape would be
    # missing here, and the diagnosis of a decoded pod would differ from that of the pod.
    pod = {"metadata": {"uid": "u", "managedFields": [{}]}, "status": pod_status}
    line = json.dumps({"type": "MODIFIED", "object": pod}).encode()
    decoded = Decoder().watch_line(line)["object"]["status"]
    assert explain(decoded) == explain(json.loads(line)["object"]["status"])


@pytest.mark.parametrize("reason", [["ErrImagePull"], {"ErrImagePull": 1}, 7, None])
def test_a_waiting_reason_that_is_not_text_is_no_reason(reason: object) -> None:
    status = {
        "phase": "Pending",
        "containerStatuses": [{"name": "prefect-job", "state": {"waiting": {"reason": reason}}}],
    }
    assert diagnose(status) is None
