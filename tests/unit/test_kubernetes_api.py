"""The pure parts of the shared Kubernetes API package: paths, error statuses and their
fixes, and the share of objects each replica watches."""

from __future__ import annotations

import orjson
import pytest

from infra_observer.kubernetes_api import (
    ApiStatusError,
    GoneError,
    in_shard,
    jobs_path,
    lease_path,
    leases_path,
    list_refused,
    pods_path,
    refusal_fix,
    status_error,
)


def test_paths_of_each_resource() -> None:
    assert pods_path(None) == "/api/v1/pods"
    assert pods_path("jobs") == "/api/v1/namespaces/jobs/pods"
    assert jobs_path(None) == "/apis/batch/v1/jobs"
    assert jobs_path("flows") == "/apis/batch/v1/namespaces/flows/jobs"
    assert leases_path("ops") == "/apis/coordination.k8s.io/v1/namespaces/ops/leases"
    assert lease_path("o/p", "a b") == "/apis/coordination.k8s.io/v1/namespaces/o%2Fp/leases/a%20b"


def test_an_error_status_carries_the_servers_reason_and_message() -> None:
    body = orjson.dumps({"kind": "Status", "reason": "Forbidden", "message": "no list"})
    error = status_error(403, "Forbidden by proxy", body)
    assert isinstance(error, ApiStatusError)
    assert (error.status, error.reason, error.message) == (403, "Forbidden", "no list")
    assert str(error) == "403 Forbidden: no list"


def test_410_is_gone_and_a_body_that_is_not_json_is_the_message() -> None:
    assert isinstance(status_error(410, "Gone", b'{"message": "too old"}'), GoneError)
    error = status_error(502, "Bad Gateway", b"<html>upstream</html>")
    assert isinstance(error, ApiStatusError)
    assert error.message == "<html>upstream</html>"


@pytest.mark.parametrize(
    ("status", "namespace", "fix"),
    [
        (401, "jobs", "refresh the kubeconfig credentials or the ServiceAccount token"),
        (403, "jobs", "grant get, list and watch on pods with a Role in namespace jobs"),
        (403, None, "grant get, list and watch on pods with a ClusterRole and"),
    ],
)
def test_the_check_and_the_watch_give_the_same_fix(
    status: int, namespace: str | None, fix: str
) -> None:
    refused = ApiStatusError(status, "Refused", "no")
    watch_fix = refusal_fix(refused, resource="pods", namespace=namespace)
    assert watch_fix is not None
    assert watch_fix.startswith(fix)
    assert watch_fix in list_refused(
        refused, host="https://k", resource="pods", namespace=namespace
    )


def test_other_failures_have_no_fix_but_are_told() -> None:
    missing = ApiStatusError(404, "NotFound", "namespaces jobs not found")
    assert refusal_fix(missing, resource="pods", namespace="jobs") is None
    assert refusal_fix(TimeoutError(), resource="pods", namespace=None) is None
    told = list_refused(missing, host="https://k", resource="jobs", namespace="jobs")
    assert told == "namespace jobs not found at https://k (404 namespaces jobs not found)"
    broken = ApiStatusError(500, "InternalError", "etcd")
    told = list_refused(broken, host="https://k", resource="jobs", namespace=None)
    assert told == (
        "the Kubernetes API at https://k answered 500 InternalError: etcd "
        "when listing jobs cluster-wide"
    )


def test_every_object_is_in_exactly_one_shard_the_same_in_every_replica() -> None:
    uids = [f"a1b2c3d4-e5f6-7890-abcd-{n:012d}" for n in range(200)]
    owners = [[index for index in range(3) if in_shard(uid, count=3, index=index)] for uid in uids]
    assert all(len(owner) == 1 for owner in owners)
    assert {owner[0] for owner in owners} == {0, 1, 2}
    assert in_shard("a1b2c3d4-e5f6-7890-abcd-000000000000", count=3, index=2)  # crc32: fixed
    assert all(in_shard(uid, count=1, index=0) for uid in uids)
