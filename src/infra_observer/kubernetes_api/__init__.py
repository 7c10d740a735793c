"""The Kubernetes API as the daemon uses it: credentials, a raw-JSON client, list-watch.

Shared by the pod source, leader election and any other watch of a resource. Modules:
`credentials` (kubeconfig or in-cluster), `client` (requests with those credentials),
`paths` (where each resource lives), `status` (error answers and their fixes), `stream`
(a watch's line framing and stall guard), `listwatch` (list-then-watch of a collection) and
`reads` (one-off reads: an object, a pod's log).
"""

from infra_observer.kubernetes_api.client import KubeClient, read_body
from infra_observer.kubernetes_api.credentials import load_configuration
from infra_observer.kubernetes_api.listwatch import (
    LIST_PAGE_SIZE,
    Collection,
    ListWatch,
    ResourceHandler,
    in_shard,
    json_get,
    list_page,
)
from infra_observer.kubernetes_api.paths import (
    collection_path,
    jobs_path,
    lease_path,
    leases_path,
    object_path,
    pods_path,
)
from infra_observer.kubernetes_api.reads import get_json, read_pod_log
from infra_observer.kubernetes_api.status import (
    ApiStatusError,
    GoneError,
    describe,
    list_refused,
    refusal_fix,
    status_error,
    unreachable,
    where,
)
from infra_observer.kubernetes_api.stream import LineSplitter, StalledError, StallGuard

__all__ = [
    "LIST_PAGE_SIZE",
    "ApiStatusError",
    "Collection",
    "GoneError",
    "KubeClient",
    "LineSplitter",
    "ListWatch",
    "ResourceHandler",
    "StallGuard",
    "StalledError",
    "collection_path",
    "describe",
    "get_json",
    "in_shard",
    "jobs_path",
    "json_get",
    "lease_path",
    "leases_path",
    "list_page",
    "list_refused",
    "load_configuration",
    "object_path",
    "pods_path",
    "read_body",
    "read_pod_log",
    "refusal_fix",
    "status_error",
    "unreachable",
    "where",
]
