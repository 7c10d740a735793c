"""The apiserver's error statuses: as exceptions, and what an operator should do about them."""

from __future__ import annotations

import orjson


class GoneError(Exception):
    """410: the resourceVersion (or continue token) is older than the server keeps."""


class ApiStatusError(Exception):
    """The apiserver answered with an error status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message


def status_error(status: int, reason: str, body: bytes) -> Exception:
    """The exception for an error answer (or a watch's ERROR event), with the server's
    message and reason from its Status object when it sent one."""
    message = ""
    try:
        decoded = orjson.loads(body)
        if isinstance(decoded, dict):
            message = str(decoded.get("message") or "")
            reason = str(decoded.get("reason") or reason)
    except orjson.JSONDecodeError:
        message = body[:200].decode(errors="replace")
    if status == 410:
        return GoneError(f"{reason}: {message}")
    return ApiStatusError(status, reason, message)


def where(namespace: str | None) -> str:
    """`in namespace <name>`, or `cluster-wide` for None."""
    return f"in namespace {namespace}" if namespace else "cluster-wide"


def refusal_fix(exc: BaseException, *, resource: str, namespace: str | None) -> str | None:
    """What to do about refused credentials (401) or a missing grant to list and watch
    `resource` (403); None for anything else."""
    if not isinstance(exc, ApiStatusError):
        return None
    if exc.status == 401:
        return "refresh the kubeconfig credentials or the ServiceAccount token"
    if exc.status != 403:
        return None
    grant = (
        f"a Role in namespace {namespace} bound to this identity"
        if namespace
        else "a ClusterRole and ClusterRoleBinding (or list the namespaces to watch in "
        "INFRA_OBSERVER_KUBERNETES_NAMESPACES and grant a Role in each)"
    )
    return f"grant get, list and watch on {resource} with {grant}"


def list_refused(exc: ApiStatusError, *, host: str, resource: str, namespace: str | None) -> str:
    """The whole story of a refused list of `resource`: what was answered and the fix."""
    fix = refusal_fix(exc, resource=resource, namespace=namespace)
    if exc.status == 401:
        return (
            f"the Kubernetes API at {host} refused the credentials (401 {exc.message}); "
            f"the token or client certificate is invalid or expired: {fix}"
        )
    if exc.status == 403:
        return (
            f"the Kubernetes API at {host} forbids listing {resource} {where(namespace)} "
            f"(403: {exc.message}); {fix}"
        )
    if exc.status == 404 and namespace:
        return f"namespace {namespace} not found at {host} (404 {exc.message})"
    return f"the Kubernetes API at {host} answered {exc} when listing {resource} {where(namespace)}"


def unreachable(exc: BaseException, *, host: str) -> str:
    """The story of a request that got no answer at all."""
    return (
        f"cannot reach the Kubernetes API at {host} ({type(exc).__name__}: {exc}); check the "
        "server address in the kubeconfig, the network path to it and its CA certificate"
    )


def describe(exc: BaseException) -> str:
    """An error in one line: its class, and its text when it has one."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
