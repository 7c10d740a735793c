"""What is wrong with a pod, from its status: a category, and for logging a summary and fix.

Pure functions over the pod's `status` object as decoded by `wire.py`; they never raise,
whatever the status holds. `diagnose` is the cheap one, run for every change of a pod: the
category alone, read from kubelet and scheduler *reasons*, never from message text other
than the scheduler's list of why nodes were rejected, and never from node counts. A change
of diagnosis is a change of category: "0/3 nodes" becoming "0/4 nodes" changes nothing.
`explain` adds the level, a one-line summary built from the pod and a resolution, for the
rare moment the category changes.

Precedence when several apply (docs/sources/kubernetes.md has the table): a Succeeded
pod has none; then Evicted (a Failed pod, the rule of the `evicted` event); Unschedulable
and its sub-categories (a Pending pod); then, over all containers and init containers,
OOMKilled, ImagePullError, CrashLoopBackOff.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

from infra_observer.sources.base import Diagnosis, Level, one_line

Category = Literal[
    "ImagePullError",
    "CrashLoopBackOff",
    "OOMKilled",
    "Evicted",
    "Unschedulable",
    "Unschedulable.InsufficientResources",
    "Unschedulable.NodeAffinity",
    "Unschedulable.Taint",
]

# Waiting reasons of the kubelet's image manager (pkg/kubelet/images/types.go, plus
# SignatureValidationFailed from image verification): the pull cannot succeed as asked.
# ErrImagePull and ImagePullBackOff alternate while the kubelet retries; both are the one
# category, so the diagnosis does not flap.
IMAGE_PULL_REASONS: Final = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "ImageInspectError",
        "RegistryUnavailable",
        "SignatureValidationFailed",
    }
)
# DisruptionTarget reasons that mean the cluster evicted the pod, as opposed to the pod
# failing on its own. `DeletionByPodGC` (the node is gone) is garbage collection, not an
# eviction, and stays `failed`. `PreemptionByKubeScheduler` is the pre-1.27 spelling.
EVICTION_REASONS: Final = frozenset(
    {
        "EvictionByEvictionAPI",
        "TerminationByKubelet",
        "PreemptionByScheduler",
        "PreemptionByKubeScheduler",
        "DeletionByTaintManager",
    }
)
CRASH_LOOP_REASON: Final = "CrashLoopBackOff"
OOM_REASON: Final = "OOMKilled"

# Fixed order, so that a message naming several rejections gives the same sub-category
# whatever the node counts: the first fragment found in this order wins.
_UNSCHEDULABLE_FRAGMENTS: Final[tuple[tuple[str, Category], ...]] = (
    ("Insufficient ", "Unschedulable.InsufficientResources"),
    ("Pod's node affinity", "Unschedulable.NodeAffinity"),  # not "volume node affinity"
    ("node selector", "Unschedulable.NodeAffinity"),
    ("taint", "Unschedulable.Taint"),
)
_CONTAINER_KEYS: Final = ("containerStatuses", "initContainerStatuses")


@dataclass(frozen=True, slots=True)
class _Finding:
    category: Category
    container: Mapping[str, Any] | None = None
    """The container it was read from; None for a pod-level finding."""


def diagnose(status: object) -> Category | None:
    """The category of what is wrong with a pod of this `status`; None when nothing is."""
    found = _find(status)
    return None if found is None else found.category


def explain(status: object) -> Diagnosis | None:
    """`diagnose`, with the level, summary and resolution of the category found."""
    found = _find(status)
    if found is None or not isinstance(status, dict):
        return None
    level, resolution = RESOLUTIONS[found.category]
    summary = _summary(found, status)
    return Diagnosis(found.category, level, one_line(summary), resolution)


def eviction_reason(status: Mapping[str, Any]) -> str | None:
    """Why a Failed pod was evicted, or None when it failed on its own.

    A container that exited with an error (reason `Error`, `OOMKilled`, ...) is a failure:
    the reference implementation's defect of calling those evictions is not repeated.
    """
    if status.get("reason") == "Evicted":
        return "Evicted"
    conditions = status.get("conditions")
    if not isinstance(conditions, list):
        return None
    for condition in conditions:
        if (
            isinstance(condition, dict)
            and condition.get("type") == "DisruptionTarget"
            and condition.get("status") == "True"
            and isinstance(reason := condition.get("reason"), str)
            and reason in EVICTION_REASONS
        ):
            return reason
    return None


def _find(status: object) -> _Finding | None:
    if type(status) is not dict:
        return None
    phase = status.get("phase")
    if phase == "Succeeded":
        return None
    if phase == "Failed" and eviction_reason(status) is not None:
        return _Finding("Evicted")
    if phase == "Pending" and (category := _unschedulable(status.get("conditions"))):
        return _Finding(category)
    return _in_containers(status)


def _unschedulable(conditions: object) -> Category | None:
    if type(conditions) is not list:
        return None
    for condition in conditions:
        if (
            type(condition) is dict
            and condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            message = condition.get("message")
            text = message if isinstance(message, str) else ""
            for fragment, category in _UNSCHEDULABLE_FRAGMENTS:
                if fragment in text:
                    return category
            return "Unschedulable"
    return None


def _in_containers(status: Mapping[str, Any]) -> _Finding | None:
    """The most severe container finding: OOMKilled, then ImagePullError, then a crash loop."""
    pull: Mapping[str, Any] | None = None
    crash: Mapping[str, Any] | None = None
    for key in _CONTAINER_KEYS:
        containers = status.get(key)
        if type(containers) is not list:
            continue
        for container in containers:
            if type(container) is not dict:
                continue
            state = _dict(container.get("state"))
            last_state = container.get("lastState")
            if not last_state and "running" in state:
                continue  # the usual container: running, never terminated before
            last = _dict(_dict(last_state).get("terminated"))
            terminated = _dict(state.get("terminated"))
            if terminated.get("reason") == OOM_REASON or last.get("reason") == OOM_REASON:
                return _Finding("OOMKilled", container)
            waiting = _dict(state.get("waiting")).get("reason")
            # A reason that is not text (a malformed status) is no reason at all.
            if pull is None and type(waiting) is str and waiting in IMAGE_PULL_REASONS:
                pull = container
            elif crash is None and _crash_looping(
                container, waiting, terminated=terminated, last=last
            ):
                crash = container
    if pull is not None:
        return _Finding("ImagePullError", pull)
    return None if crash is None else _Finding("CrashLoopBackOff", crash)


def _crash_looping(
    container: Mapping[str, Any],
    waiting: object,
    *,
    terminated: Mapping[str, Any],
    last: Mapping[str, Any],
) -> bool:
    """Backing off, or restarted after a failed exit.

    The kubelet shows `CrashLoopBackOff` only between restarts, briefly: a container that
    has restarted and whose last (or current) termination failed is crash-looping too, and
    stays so while it runs again, so the category does not flap with each restart.
    """
    if waiting == CRASH_LOOP_REASON:
        return True
    restarts = container.get("restartCount")
    if type(restarts) is not int or restarts <= 0:
        return False
    return _failed(last) or _failed(terminated)


def _failed(terminated: Mapping[str, Any]) -> bool:
    code = terminated.get("exitCode")
    return type(code) is int and code != 0


def _dict(value: object) -> Mapping[str, Any]:
    return value if type(value) is dict else _EMPTY


_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


# --- explanation ----------------------------------------------------------------------------

RESOLUTIONS: Final[Mapping[Category, tuple[Level, str]]] = {
    "ImagePullError": (
        "WARNING",
        "Check the image name and tag, that the registry is reachable from the nodes, and "
        "the pod's imagePullSecrets; the kubelet keeps retrying meanwhile.",
    ),
    "CrashLoopBackOff": (
        "WARNING",
        "The container keeps failing after restarts: read its logs (kubectl logs --previous) "
        "for the error, and check its command, environment and configuration.",
    ),
    "OOMKilled": (
        "ERROR",
        "The container used more memory than its limit: raise the memory limit (and request) "
        "in the work pool's job template, or reduce the flow's memory use.",
    ),
    "Evicted": (
        "ERROR",
        "The node reclaimed resources or was drained: set memory and ephemeral-storage "
        "requests that match the flow's use, or give the pod a higher priority class.",
    ),
    "Unschedulable": (
        "WARNING",
        "No node can take the pod: check the scheduler's message and the cluster's capacity.",
    ),
    "Unschedulable.InsufficientResources": (
        "WARNING",
        "No node has the CPU, memory or other resources the pod requests: lower the "
        "requests, or add nodes (or let the cluster autoscaler add them).",
    ),
    "Unschedulable.NodeAffinity": (
        "WARNING",
        "No node matches the pod's node selector or affinity: check the selector and "
        "affinity in the job template against the nodes' labels.",
    ),
    "Unschedulable.Taint": (
        "WARNING",
        "Every node that fits has a taint the pod does not tolerate: add a toleration to the "
        "job template, or schedule on nodes without that taint.",
    ),
}


def _summary(found: _Finding, status: Mapping[str, Any]) -> str:
    if found.category == "Evicted":
        reason = eviction_reason(status)
        return f"Pod was evicted ({reason}): {_text(status.get('message'))}"
    if found.container is None:
        return f"Pod cannot be scheduled: {_scheduling_message(status)}"
    container = found.container
    name = _text(container.get("name"))
    state = _dict(container.get("state"))
    if found.category == "ImagePullError":
        waiting = _dict(state.get("waiting"))
        reason, message = _text(waiting.get("reason")), _text(waiting.get("message"))
        return f"Container {name} cannot pull its image ({reason}): {message}"
    terminated = _dict(state.get("terminated")) or _dict(
        _dict(container.get("lastState")).get("terminated")
    )
    code = terminated.get("exitCode", "unknown")
    if found.category == "OOMKilled":
        return f"Container {name} was killed for exceeding its memory limit (exit code {code})"
    restarts = container.get("restartCount", 0)
    return f"Container {name} keeps failing (exit code {code}) and has restarted {restarts} times"


def _scheduling_message(status: Mapping[str, Any]) -> str:
    conditions = status.get("conditions")
    for condition in conditions if type(conditions) is list else ():
        if type(condition) is dict and condition.get("type") == "PodScheduled":
            return _text(condition.get("message"))
    return "no message"


def _text(value: object) -> str:
    return value if isinstance(value, str) and value else "unknown"
