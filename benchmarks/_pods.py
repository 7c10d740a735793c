"""Pods shaped like the ones Prefect's Kubernetes worker creates (a Job's pod), as bodies to
create on a real apiserver, and the status patches a kubelet would write."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

FLOW_RUN_LABEL = "prefect.io/flow-run-id"


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def flow_run_labels(index: int, flow_run_id: str | None = None) -> dict[str, str]:
    """The labels the worker puts on a flow run's job and pod; without `flow_run_id`, a
    random id that no Prefect server knows."""
    run = flow_run_id or str(
        uuid.uuid5(uuid.NAMESPACE_URL, f"bench-flow-run-{index}-{uuid.uuid4()}")
    )
    return {
        FLOW_RUN_LABEL: run,
        "prefect.io/flow-run-name": f"bench-run-{index}",
        "prefect.io/deployment-id": "6f2b6a43-6c0f-4a5e-9a4f-3c1f6a0b2d11",
        "prefect.io/deployment-name": "nightly-etl",
        "prefect.io/flow-id": "0d7c1f52-1b7e-4e8a-8d3f-52b9b1a7c0e4",
        "prefect.io/flow-name": "etl",
        "prefect.io/work-pool-id": "b3a1d0c2-77f4-4f0e-9d8b-1e2f3a4b5c6d",
        "prefect.io/work-pool-name": "kubernetes-pool",
        "prefect.io/worker-name": "kubernetesworker-1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718",
        "prefect.io/version": "3.8.8",
        "job-name": f"bench-run-{index}-x7k2p",
        "batch.kubernetes.io/job-name": f"bench-run-{index}-x7k2p",
    }


def pod_body(name: str, labels: dict[str, str] | None) -> dict[str, Any]:
    """A pod with the worker's environment, resources and volumes (a few KB as JSON)."""
    flow_run_id = (labels or {}).get(FLOW_RUN_LABEL, str(uuid.uuid4()))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _job_pod_metadata(name, labels, flow_run_id=flow_run_id),
        "spec": _job_pod_spec(_job_container(flow_run_id)),
    }


def _job_pod_metadata(
    name: str, labels: dict[str, str] | None, *, flow_run_id: str
) -> dict[str, Any]:
    """The pod's name, labels, annotations and its owning Job."""
    metadata: dict[str, Any] = {
        "name": name,
        "annotations": {
            "prefect.io/flow-run-url": f"http://prefect-server/runs/flow-run/{flow_run_id}",
            "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
        },
        "ownerReferences": [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": f"{name}-job",
                "uid": str(uuid.uuid4()),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if labels:
        metadata["labels"] = labels
    return metadata


def _worker_env(flow_run_id: str) -> list[dict[str, Any]]:
    """The environment the worker gives a flow run's container."""
    return [
        {"name": "PREFECT_API_URL", "value": "http://prefect-server.prefect.svc:4200/api"},
        {"name": "PREFECT__FLOW_RUN_ID", "value": flow_run_id},
        {"name": "PREFECT_LOGGING_LEVEL", "value": "INFO"},
        {"name": "PREFECT_RESULTS_PERSIST_BY_DEFAULT", "value": "true"},
        {"name": "PREFECT_LOCAL_STORAGE_PATH", "value": "/opt/prefect/results"},
        {"name": "PREFECT__STORAGE_BASE_PATH", "value": "s3://flows/etl"},
        {"name": "PREFECT_WORKER_NAME", "value": "kubernetes-pool-worker"},
        {"name": "EXTRA_PIP_PACKAGES", "value": "prefect-aws s3fs pandas"},
        {
            "name": "AWS_REGION",
            "valueFrom": {"configMapKeyRef": {"name": "flow-settings", "key": "region"}},
        },
        {
            "name": "DB_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "etl-db", "key": "password"}},
        },
    ]


def _job_container(flow_run_id: str) -> dict[str, Any]:
    """The flow run's container: image, command, environment, resources, mounts, security."""
    return {
        "name": "prefect-job",
        "image": "prefecthq/prefect:3.8.8-python3.11",
        "imagePullPolicy": "IfNotPresent",
        "args": ["prefect", "flow-run", "execute"],
        "env": _worker_env(flow_run_id),
        "resources": {
            "requests": {"cpu": "500m", "memory": "1Gi"},
            "limits": {"cpu": "2", "memory": "4Gi"},
        },
        "volumeMounts": [
            {"name": "results", "mountPath": "/opt/prefect/results"},
            {"name": "config", "mountPath": "/etc/flow", "readOnly": True},
        ],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }


def _job_pod_spec(container: dict[str, Any]) -> dict[str, Any]:
    """The pod spec around the container: restart policy, scheduling and volumes."""
    return {
        "containers": [container],
        "restartPolicy": "Never",
        "serviceAccountName": "default",
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 30,
        "nodeSelector": {"workload": "flows"},
        "tolerations": [
            {"key": "flows", "operator": "Exists", "effect": "NoSchedule"},
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
        "volumes": [
            {"name": "results", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "config", "configMap": {"name": "flow-settings"}},
        ],
    }


def _container(state: dict[str, Any], *, ready: bool, started: bool) -> dict[str, Any]:
    return {
        "name": "prefect-job",
        "state": state,
        "lastState": {},
        "ready": ready,
        "restartCount": 0,
        "image": "docker.io/prefecthq/prefect:3.8.8-python3.11",
        "imageID": "docker.io/prefecthq/prefect@sha256:"
        "5d0c1a6f0b0e7c1d7e8a2f6b1c3e4d5f60718293a4b5c6d7e8f9a0b1c2d3e4f5",
        "containerID": container_id(),
        "started": started,
    }


def status_patch(phase: str, *, started: str) -> dict[str, Any]:
    """The pod status a kubelet reports in `phase` (Running or Succeeded)."""
    now = now_rfc3339()
    conditions = [
        {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": started},
        {"type": "Initialized", "status": "True", "lastTransitionTime": started},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
    ]
    if phase == "Running":
        state: dict[str, Any] = {"running": {"startedAt": started}}
        container = _container(state, ready=True, started=True)
        conditions += [
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
        ]
    else:
        state = {
            "terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "startedAt": started,
                "finishedAt": now,
                "containerID": container_id(),
            }
        }
        container = _container(state, ready=False, started=False)
        conditions += [
            {
                "type": "Ready",
                "status": "False",
                "reason": "PodCompleted",
                "lastTransitionTime": now,
            },
            {
                "type": "ContainersReady",
                "status": "False",
                "reason": "PodCompleted",
                "lastTransitionTime": now,
            },
        ]
    return {
        "status": {
            "phase": phase,
            "conditions": conditions,
            "hostIP": "10.0.3.17",
            "hostIPs": [{"ip": "10.0.3.17"}],
            "podIP": "10.244.2.31",
            "podIPs": [{"ip": "10.244.2.31"}],
            "startTime": started,
            "qosClass": "Burstable",
            "containerStatuses": [container],
        }
    }


def container_id() -> str:
    return "containerd://8b1f9c2d3e4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c"
