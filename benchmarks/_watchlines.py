"""Pod watch lines as the apiserver streams them: whole pods with server-set fields.

The objects are the bodies of `_pods` as a kube-apiserver returns them after create and
status updates (uid, resourceVersion, managedFields, defaulted spec, kubelet status), so a
line is about 6 KB, like a real Prefect job pod's.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import orjson

from benchmarks._pods import flow_run_labels, pod_body, status_patch

CREATED = "2026-11-25T06:00:00Z"
STARTED = "2026-11-25T06:00:07Z"


def _fields(obj: Any) -> Any:
    """managedFields' fieldsV1 shape: every key as `f:key`, leaves as {}."""
    if isinstance(obj, dict):
        return {f"f:{key}": _fields(value) for key, value in obj.items()}
    return {}


def _server_pod(index: int, namespace: str) -> dict[str, Any]:
    name = f"bench-run-{index}-x7k2p-{index:05d}"
    pod = pod_body(name, flow_run_labels(index))
    metadata = pod["metadata"]
    metadata.update(
        {
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "resourceVersion": "0",
            "generation": 1,
            "creationTimestamp": CREATED,
            "generateName": name[:-5],
        }
    )
    spec = pod["spec"]
    spec.update(
        {
            "dnsPolicy": "ClusterFirst",
            "schedulerName": "default-scheduler",
            "securityContext": {},
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
            "nodeName": "worker-node-3",
        }
    )
    metadata["managedFields"] = [
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "apiVersion": "v1",
            "time": CREATED,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": _fields(metadata), "f:spec": _fields(spec)},
        }
    ]
    return pod


def _with_status(pod: dict[str, Any], phase: str, version: int) -> dict[str, Any]:
    updated = copy.deepcopy(pod)
    updated["metadata"]["resourceVersion"] = str(version)
    if phase == "Pending":
        updated["status"] = {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": CREATED}
            ],
            "qosClass": "Burstable",
        }
        return updated
    updated["status"] = status_patch(phase, started=STARTED)["status"]
    updated["metadata"]["managedFields"].append(
        {
            "manager": "kubelet",
            "operation": "Update",
            "apiVersion": "v1",
            "time": STARTED,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:status": _fields(updated["status"])},
            "subresource": "status",
        }
    )
    return updated


def pod_lifecycle_lines(index: int, *, namespace: str = "flows") -> list[bytes]:
    """ADDED Pending, MODIFIED Running, MODIFIED Succeeded, DELETED: three transitions."""
    pod = _server_pod(index, namespace)
    base = 1000 + index * 4
    steps = [("ADDED", "Pending"), ("MODIFIED", "Running"), ("MODIFIED", "Succeeded")]
    lines = [
        orjson.dumps({"type": kind, "object": _with_status(pod, phase, base + n)}) + b"\n"
        for n, (kind, phase) in enumerate(steps)
    ]
    final = _with_status(pod, "Succeeded", base + 3)
    final["metadata"]["deletionTimestamp"] = STARTED
    final["metadata"]["deletionGracePeriodSeconds"] = 0
    lines.append(orjson.dumps({"type": "DELETED", "object": final}) + b"\n")
    return lines


def watch_lines(pods: int) -> Iterator[bytes]:
    for index in range(pods):
        yield from pod_lifecycle_lines(index)


def replayed_lines(recorded: list[bytes], pods: int) -> Iterator[bytes]:
    """The recorded life of one pod, once per pod, each time with a fresh uid and flow run."""
    first = orjson.loads(recorded[0])["object"]["metadata"]
    uid = first["uid"].encode()
    flow_run = first["labels"]["prefect.io/flow-run-id"].encode()
    for _ in range(pods):
        new_uid, new_run = str(uuid.uuid4()).encode(), str(uuid.uuid4()).encode()
        for line in recorded:
            yield line.replace(uid, new_uid).replace(flow_run, new_run)
