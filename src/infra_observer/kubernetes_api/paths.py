"""API paths of the Kubernetes resources the daemon reads and writes."""

from __future__ import annotations

from urllib.parse import quote


def collection_path(*, group_version: str, resource: str, namespace: str | None) -> str:
    """The collection of `resource` in `namespace`, or across the cluster when None.

    `group_version` is `v1` for the core group, else `<group>/<version>` (`batch/v1`).
    """
    root = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    if namespace is None:
        return f"{root}/{resource}"
    return f"{root}/namespaces/{quote(namespace, safe='')}/{resource}"


def object_path(*, group_version: str, resource: str, namespace: str | None, name: str) -> str:
    """One named object of `resource`."""
    collection = collection_path(
        group_version=group_version, resource=resource, namespace=namespace
    )
    return f"{collection}/{quote(name, safe='')}"


def pods_path(namespace: str | None) -> str:
    return collection_path(group_version="v1", resource="pods", namespace=namespace)


def jobs_path(namespace: str | None) -> str:
    return collection_path(group_version="batch/v1", resource="jobs", namespace=namespace)


def leases_path(namespace: str) -> str:
    return collection_path(
        group_version="coordination.k8s.io/v1", resource="leases", namespace=namespace
    )


def lease_path(namespace: str, name: str) -> str:
    return object_path(
        group_version="coordination.k8s.io/v1", resource="leases", namespace=namespace, name=name
    )
