"""Whether the daemon's own identity may do something, asked of the apiserver itself.

A `SelfSubjectAccessReview` answers for whatever identity the request carries (kubeconfig
user, ServiceAccount token), through the cluster's real authorizers, without trying the
action: `check` can tell an operator which grant is missing before the daemon needs it.
Every authenticated identity may create one (the `system:basic-user` ClusterRole).
"""

from __future__ import annotations

import dataclasses

import httpx
import orjson

from infra_observer.kubernetes_api.client import KubeClient, read_body
from infra_observer.kubernetes_api.status import status_error, where

REVIEWS_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
# One small request: an apiserver that takes longer is as good as unreachable for a check.
_LIMITS = httpx.Timeout(30.0)


@dataclasses.dataclass(frozen=True, slots=True)
class Permission:
    """Verbs on one resource (or subresource) of an API group (empty: the core group)."""

    group: str
    resource: str
    verbs: tuple[str, ...]
    subresource: str = ""

    @property
    def name(self) -> str:
        """`pods/log`, `jobs (batch)`: as an operator reads it."""
        name = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return f"{name} ({self.group})" if self.group else name

    @property
    def rule(self) -> str:
        """The RBAC rule that grants it, as written in a Role."""
        resource = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        verbs = ", ".join(f'"{verb}"' for verb in self.verbs)
        return f'{{apiGroups: ["{self.group}"], resources: ["{resource}"], verbs: [{verbs}]}}'


async def may(
    client: KubeClient,
    *,
    verb: str,
    resource: str,
    namespace: str | None,
    subresource: str = "",
    group: str = "",
) -> bool:
    """Whether `verb` on `group`'s `resource` (`subresource`, e.g. `log` of `pods`) is
    allowed in `namespace`, or in every namespace when None. `group` is empty for the core
    group. An error answer raises `ApiStatusError` with the server's message."""
    attributes = {
        "verb": verb,
        "group": group,
        "resource": resource,
        "subresource": subresource,
        "namespace": namespace or "",
    }
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    response = await client.request("POST", REVIEWS_PATH, limits=_LIMITS, body=orjson.dumps(review))
    body = await read_body(response)
    if response.status_code not in {200, 201}:
        raise status_error(response.status_code, response.reason_phrase, body)
    answer = orjson.loads(body)
    status = answer.get("status") if isinstance(answer, dict) else None
    return isinstance(status, dict) and status.get("allowed") is True


async def denied(
    client: KubeClient, permission: Permission, *, namespaces: list[str | None]
) -> list[str]:
    """What of `permission` is not allowed, as `<verb> in namespace <name>` or
    `<verb> cluster-wide` (None in `namespaces`); empty when everything is."""
    missing: list[str] = []
    for namespace in namespaces:
        for verb in permission.verbs:
            allowed = await may(
                client,
                verb=verb,
                resource=permission.resource,
                subresource=permission.subresource,
                group=permission.group,
                namespace=namespace,
            )
            if not allowed:
                missing.append(f"{verb} {where(namespace)}")
    return missing
