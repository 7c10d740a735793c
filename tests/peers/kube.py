"""A real kube-apiserver backed by a private etcd, plus helpers to drive pods through phases.

There is no scheduler, kubelet or controller manager: pods stay Pending until a test
patches ``pods/status`` with the helpers below.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import secrets
import ssl
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from ._util import (
    ManagedProcess,
    PeerUnavailableError,
    cache_dir,
    free_port,
    provisioned,
    remove_tree,
    short_tempdir,
    wait_until,
)

log = logging.getLogger(__name__)

POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")


def kube_apiserver_binary() -> Path:
    """The provisioned kube-apiserver; INFRA_OBSERVER_KUBE_VERSION picks one of several."""
    version = os.environ.get("INFRA_OBSERVER_KUBE_VERSION")
    if version:
        version = version if version.startswith("v") else "v" + version
        path = cache_dir() / "kube" / version / "bin" / "kube-apiserver"
        if not path.exists():
            raise PeerUnavailableError(
                f"{path} missing: run INFRA_OBSERVER_KUBE_VERSION={version} scripts/provision-peers"
            )
        return path
    return provisioned("kube_apiserver")


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_file: Path,
    user: str,
    token: str | None = None,
    client_certificate: tuple[Path, Path] | None = None,
) -> Path:
    """A kubeconfig with one cluster, one user and one context (JSON is valid YAML); the user
    has a token, or a client certificate and key as (cert, key) files, or both."""
    credentials: dict[str, str] = {}
    if token is not None:
        credentials["token"] = token
    if client_certificate is not None:
        credentials["client-certificate"] = str(client_certificate[0])
        credentials["client-key"] = str(client_certificate[1])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "infra-observer-test",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [
            {
                "name": user,
                "context": {"cluster": "infra-observer-test", "user": user, "namespace": "default"},
            }
        ],
        "current-context": user,
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


class KubePeer:
    """etcd + kube-apiserver on free loopback ports, with token auth and RBAC.

    Attributes: ``server`` (https URL), ``token`` (system:masters), ``ca_file``,
    ``kubeconfig`` (admin kubeconfig file), ``etcd_endpoint``, ``version``. Client
    certificates signed with ``client_certificate()`` are accepted too (``--client-ca-file``).
    """

    def __init__(self, *, state_dir: Path | None = None) -> None:
        self.apiserver_binary = kube_apiserver_binary()
        self.etcd_binary = provisioned("etcd")
        self.etcdctl_binary = provisioned("etcdctl")
        self._own_state_dir = state_dir is None
        self.state_dir = state_dir or short_tempdir("io-kube-")
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.etcd_endpoint = f"http://127.0.0.1:{self.etcd_port}"
        self.cert_dir = self.state_dir / "certs"
        self.ca_file = self.cert_dir / "apiserver.crt"
        self.client_ca_file = self.state_dir / "client-ca.crt"
        self._client_ca_key = self.state_dir / "client-ca.key"
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.version = ""
        self._etcd: ManagedProcess | None = None
        self._apiserver: ManagedProcess | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> KubePeer:
        try:
            self._write_auth_files()
            self._start_etcd()
            self._start_apiserver()
            write_kubeconfig(
                self.kubeconfig,
                server=self.server,
                ca_file=self.ca_file,
                token=self.token,
                user="admin",
            )
            self.version = self._get_json("/version").get("gitVersion", "")
            log.info("kube-apiserver %s ready at %s", self.version, self.server)
        except BaseException:
            self.stop()
            raise
        return self

    def _write_auth_files(self) -> None:
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "tokens.csv").write_text(f"{self.token},admin,admin,system:masters\n")
        if not self.client_ca_file.exists():
            _openssl(
                "req",
                "-x509",
                *_NEW_KEY,
                "-keyout",
                str(self._client_ca_key),
                "-out",
                str(self.client_ca_file),
                "-subj",
                "/CN=infra-observer-test-client-ca",
                "-days",
                "30",
            )
        key = self.state_dir / "sa.key"
        if not key.exists():
            subprocess.run(
                ["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True
            )
            subprocess.run(
                [
                    "openssl",
                    "rsa",
                    "-in",
                    str(key),
                    "-pubout",
                    "-out",
                    str(self.state_dir / "sa.pub"),
                ],
                check=True,
                capture_output=True,
            )

    def _start_etcd(self) -> None:
        data = self.state_dir / "etcd"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        self._etcd = ManagedProcess(
            "etcd",
            [
                self.etcd_binary,
                "--name",
                "default",
                "--data-dir",
                str(data),
                "--listen-client-urls",
                self.etcd_endpoint,
                "--advertise-client-urls",
                self.etcd_endpoint,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                f"default={peer}",
                # Tests never need durability; fsync only slows them down.
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
            log_path=self.state_dir / "etcd.log",
        )
        self._etcd.start()
        etcd = self._etcd

        def healthy() -> bool | None:
            response = httpx.get(self.etcd_endpoint + "/health", timeout=2)
            return True if response.json().get("health") == "true" else None

        wait_until(
            healthy, timeout=30, what="etcd", alive=etcd.running, diagnostics=etcd.diagnostics
        )

    def _apiserver_argv(self) -> list[str]:
        return [
            str(self.apiserver_binary),
            f"--etcd-servers={self.etcd_endpoint}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={self.cert_dir}",
            f"--token-auth-file={self.state_dir / 'tokens.csv'}",
            f"--client-ca-file={self.client_ca_file}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={self.server}",
            f"--service-account-key-file={self.state_dir / 'sa.pub'}",
            f"--service-account-signing-key-file={self.state_dir / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--disable-admission-plugins=ServiceAccount",
            "--endpoint-reconciler-type=none",
            # Without the watch cache an old resourceVersion goes to etcd: 410 is deterministic.
            "--watch-cache=false",
            "--v=1",
        ]

    def _start_apiserver(self) -> None:
        self._apiserver = ManagedProcess(
            "kube-apiserver",
            self._apiserver_argv(),
            log_path=self.state_dir / "kube-apiserver.log",
        )
        self._apiserver.start()
        apiserver = self._apiserver

        def ready() -> bool | None:
            if not self.ca_file.exists():
                return None
            return True if self._get_text("/readyz") == "ok" else None

        wait_until(
            ready,
            timeout=90,
            interval=0.3,
            what="kube-apiserver",
            alive=apiserver.running,
            diagnostics=apiserver.diagnostics,
        )

    def restart_apiserver(self) -> None:
        """Stop and start the apiserver on the same port; etcd (and so all objects) stays."""
        if self._apiserver is not None:
            self._apiserver.stop()
        self._start_apiserver()

    def stop_apiserver(self) -> None:
        """Stop only the apiserver (e.g. to test reconnects); start it with restart_apiserver()."""
        if self._apiserver is not None:
            self._apiserver.stop()

    def stop(self) -> None:
        for proc in (self._apiserver, self._etcd):
            if proc is not None:
                proc.stop()
        self._apiserver = self._etcd = None
        if self._own_state_dir:
            remove_tree(self.state_dir)

    def __enter__(self) -> KubePeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """Environment for a process that should use this apiserver."""
        return {"KUBECONFIG": str(self.kubeconfig)}

    def helm(
        self, *args: str, kubeconfig: Path | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        """Run the provisioned helm against this apiserver (raises on a non-zero exit).

        Helm's cache/config/data dirs live in the peer's state dir, never in $HOME.
        """
        helm_home = self.state_dir / "helm"
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig or self.kubeconfig),
            "HELM_CACHE_HOME": str(helm_home / "cache"),
            "HELM_CONFIG_HOME": str(helm_home / "config"),
            "HELM_DATA_HOME": str(helm_home / "data"),
        }
        result = subprocess.run(
            [str(provisioned("helm")), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, result.args, result.stdout, result.stderr
            )
        return result

    def client_certificate(
        self, directory: Path, user: str, *, groups: Sequence[str] = (), days: int = 1
    ) -> tuple[Path, Path]:
        """A client certificate for ``user`` (and ``groups``) signed by the apiserver's client
        CA, written as ``client.crt`` and ``client.key`` in ``directory``, replacing those
        there (a rotation); ``days=-1`` makes one that has already expired."""
        directory.mkdir(parents=True, exist_ok=True)
        subject = "".join([f"/CN={user}", *(f"/O={group}" for group in groups)])
        key, request = directory / "client.key.new", directory / "client.csr"
        cert, cert_new = directory / "client.crt", directory / "client.crt.new"
        _openssl("req", *_NEW_KEY, "-keyout", str(key), "-out", str(request), "-subj", subject)
        _openssl(
            "x509",
            "-req",
            "-in",
            str(request),
            "-CA",
            str(self.client_ca_file),
            "-CAkey",
            str(self._client_ca_key),
            "-set_serial",
            str(secrets.randbits(63)),
            "-days",
            str(days),
            "-out",
            str(cert_new),
        )
        request.unlink()
        cert_new.replace(cert)
        key.replace(directory / "client.key")
        return cert, directory / "client.key"

    # ------------------------------------------------------------ plain HTTP + etcd

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _get_text(self, path: str) -> str:
        # httpx rather than urllib: urllib's HTTPError keeps its socket open until GC,
        # which pytest (filterwarnings=error) reports as an unclosed-socket ResourceWarning.
        with httpx.Client(verify=self._ssl_context(), timeout=5) as client:
            response = client.get(
                self.server + path, headers={"Authorization": f"Bearer {self.token}"}
            )
            response.raise_for_status()
            return response.text

    def _get_json(self, path: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self._get_text(path))
        return data

    def etcdctl(self, *args: str) -> str:
        result = subprocess.run(
            [str(self.etcdctl_binary), f"--endpoints={self.etcd_endpoint}", *args],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "ETCDCTL_API": "3"},
            timeout=30,
        )
        return result.stdout

    def etcd_revision(self) -> int:
        status = json.loads(self.etcdctl("endpoint", "status", "-w", "json"))
        return int(status[0]["Status"]["header"]["revision"])

    def compact_etcd(self) -> int:
        """Compact etcd at its current revision: older resourceVersions now answer 410 Gone."""
        revision = self.etcd_revision()
        self.etcdctl("compact", str(revision))
        return revision

    # ------------------------------------------------------------ kubernetes_asyncio

    @contextlib.asynccontextmanager
    async def api_client(self, kubeconfig: Path | None = None) -> AsyncIterator[Any]:
        """A kubernetes_asyncio ApiClient loaded explicitly from a kubeconfig file.

        Never relies on $KUBECONFIG, which kubernetes_asyncio reads at import time.
        """
        from kubernetes_asyncio import client, config

        configuration = client.Configuration()
        await config.load_kube_config(
            config_file=str(kubeconfig or self.kubeconfig), client_configuration=configuration
        )
        async with client.ApiClient(configuration=configuration) as api:
            yield api


_NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


# ---------------------------------------------------------------- async helpers


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def rfc3339(value: dt.datetime | str | None) -> str:
    """Kubernetes timestamps: whole seconds, UTC, 'Z'."""
    if value is None:
        return _now()
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


async def ensure_namespace(kube: KubePeer, name: str) -> None:
    """Create a namespace unless it exists (namespaces are never deleted: they stay Terminating)."""
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException

    async with kube.api_client() as api:
        try:
            core: Any = client.CoreV1Api(api)
            await core.create_namespace(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            )
        except ApiException as exc:
            if exc.status != 409:
                raise


async def create_pod(
    kube: KubePeer,
    namespace: str,
    name: str,
    labels: Mapping[str, str],
    *,
    node_name: str | None = None,
    init_containers: Sequence[str] = (),
    annotations: Mapping[str, str] | None = None,
) -> Any:
    """Create a pod with one ``busybox`` container (and optional init containers); returns V1Pod.

    With ``node_name`` the pod looks scheduled; delete it with grace period 0 (no kubelet).
    """
    from kubernetes_asyncio import client

    await ensure_namespace(kube, namespace)
    spec: dict[str, Any] = {
        "containers": [{"name": "busybox", "image": "busybox", "command": ["sleep", "3600"]}],
        "restartPolicy": "Never",
    }
    if init_containers:
        spec["initContainers"] = [
            {"name": n, "image": "busybox", "command": ["true"]} for n in init_containers
        ]
    if node_name:
        spec["nodeName"] = node_name
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": dict(labels), "annotations": dict(annotations or {})},
        "spec": spec,
    }
    async with kube.api_client() as api:
        core: Any = client.CoreV1Api(api)
        return await core.create_namespaced_pod(namespace, body)


def container_status(
    name: str = "busybox",
    *,
    state: str = "running",
    restart_count: int = 0,
    started_at: dt.datetime | str | None = None,
    finished_at: dt.datetime | str | None = None,
    exit_code: int = 0,
    reason: str | None = None,
    message: str | None = None,
    ready: bool | None = None,
    image: str = "busybox",
) -> dict[str, Any]:
    """One entry of ``containerStatuses``/``initContainerStatuses``.

    ``state`` is ``running``, ``terminated`` or ``waiting``; a terminated state carries
    ``exit_code``, ``reason`` (default Completed/Error by exit code) and ``finished_at``.
    """
    started = rfc3339(started_at)
    state_body: dict[str, Any]
    if state == "running":
        state_body = {"running": {"startedAt": started}}
    elif state == "terminated":
        state_body = {
            "terminated": {
                "exitCode": exit_code,
                "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                "startedAt": started,
                "finishedAt": rfc3339(finished_at),
                **({"message": message} if message else {}),
            }
        }
    elif state == "waiting":
        state_body = {
            "waiting": {
                "reason": reason or "ContainerCreating",
                **({"message": message} if message else {}),
            }
        }
    else:
        raise ValueError(f"unknown container state {state!r}")
    return {
        "name": name,
        "state": state_body,
        "ready": ready if ready is not None else state == "running",
        "restartCount": restart_count,
        "image": image,
        "imageID": "",
        "started": state == "running",
    }


async def patch_pod_status(
    kube: KubePeer, namespace: str, name: str, status: Mapping[str, Any]
) -> Any:
    """Merge-patch ``pods/status`` (lists such as containerStatuses are replaced whole)."""
    from kubernetes_asyncio import client

    async with kube.api_client() as api:
        core: Any = client.CoreV1Api(api)
        return await core.patch_namespaced_pod_status(
            name,
            namespace,
            {"status": dict(status)},
            _content_type="application/merge-patch+json",
        )


def _default_container_statuses(
    phase: str,
    *,
    restart_count: int,
    exit_code: int | None,
    started_at: dt.datetime | str | None,
    finished_at: dt.datetime | str | None,
    container_reason: str | None,
) -> list[dict[str, Any]]:
    """The one container's status a kubelet reports in ``phase`` (see ``set_pod_phase``)."""
    if phase == "Pending":
        return [
            container_status(state="waiting", restart_count=restart_count, reason=container_reason)
        ]
    if phase == "Running":
        return [
            container_status(state="running", restart_count=restart_count, started_at=started_at)
        ]
    if phase in ("Succeeded", "Failed"):
        code = exit_code if exit_code is not None else (0 if phase == "Succeeded" else 1)
        return [
            container_status(
                state="terminated",
                restart_count=restart_count,
                started_at=started_at,
                finished_at=finished_at,
                exit_code=code,
                reason=container_reason,
            )
        ]
    return []


async def set_pod_phase(
    kube: KubePeer,
    namespace: str,
    name: str,
    phase: str,
    *,
    restart_count: int = 0,
    exit_code: int | None = None,
    reason: str | None = None,
    message: str | None = None,
    started_at: dt.datetime | str | None = None,
    finished_at: dt.datetime | str | None = None,
    container_statuses: Sequence[Mapping[str, Any]] | None = None,
    init_container_statuses: Sequence[Mapping[str, Any]] | None = None,
    conditions: Sequence[Mapping[str, Any]] | None = None,
    container_reason: str | None = None,
) -> Any:
    """Drive a pod to ``phase`` the way a kubelet would report it; returns the V1Pod.

    Defaults: Pending → container waiting; Running → running since ``started_at``;
    Succeeded → terminated exit 0; Failed → terminated ``exit_code`` (default 1);
    Unknown → no container statuses. ``reason``/``message`` go to ``status``;
    ``container_reason`` to the container's terminated/waiting state.
    Pass ``container_statuses`` to take full control.
    """
    if phase not in POD_PHASES:
        raise ValueError(f"unknown pod phase {phase!r}")
    if container_statuses is None:
        container_statuses = _default_container_statuses(
            phase,
            restart_count=restart_count,
            exit_code=exit_code,
            started_at=started_at,
            finished_at=finished_at,
            container_reason=container_reason,
        )
    status: dict[str, Any] = {
        "phase": phase,
        "containerStatuses": [dict(s) for s in container_statuses],
    }
    if phase != "Pending" or started_at is not None:
        status["startTime"] = rfc3339(started_at)
    if init_container_statuses is not None:
        status["initContainerStatuses"] = [dict(s) for s in init_container_statuses]
    if reason is not None:
        status["reason"] = reason
    if message is not None:
        status["message"] = message
    if conditions is not None:
        status["conditions"] = [dict(c) for c in conditions]
    return await patch_pod_status(kube, namespace, name, status)


async def evict_pod(
    kube: KubePeer,
    namespace: str,
    name: str,
    *,
    kubelet_reason: bool = True,
    disruption_reason: str | None = "EvictionByEvictionAPI",
    exit_code: int = 137,
) -> Any:
    """Mark a pod evicted: phase Failed, ``status.reason="Evicted"`` (as the kubelet does)
    and/or a ``DisruptionTarget`` condition with ``disruption_reason``.
    """
    conditions = None
    if disruption_reason:
        conditions = [
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": disruption_reason,
                "message": "Eviction API: evicting",
                "lastTransitionTime": _now(),
            }
        ]
    return await set_pod_phase(
        kube,
        namespace,
        name,
        "Failed",
        exit_code=exit_code,
        reason="Evicted" if kubelet_reason else None,
        message="The node was low on resource: memory." if kubelet_reason else None,
        conditions=conditions,
        container_reason="Error",
    )


async def read_pod(kube: KubePeer, namespace: str, name: str) -> Any:
    from kubernetes_asyncio import client

    async with kube.api_client() as api:
        return await client.CoreV1Api(api).read_namespaced_pod(name, namespace)


async def delete_pod(kube: KubePeer, namespace: str, name: str) -> None:
    """Delete with grace period 0: with no kubelet, a graceful delete would never finish."""
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException

    async with kube.api_client() as api:
        try:
            await client.CoreV1Api(api).delete_namespaced_pod(
                name, namespace, grace_period_seconds=0
            )
        except ApiException as exc:
            if exc.status != 404:
                raise


async def _create_or_reuse(call: Any, *args: Any) -> None:
    """Create an object with ``call``; one that exists already (409) is reused."""
    from kubernetes_asyncio.client.exceptions import ApiException

    try:
        await call(*args)
    except ApiException as exc:
        if exc.status != 409:
            raise


async def _grant(
    rbac: Any,
    *,
    namespace: str | None,
    name: str,
    rules: Sequence[Mapping[str, Any]],
    subject: list[dict[str, str]],
) -> None:
    """A Role and RoleBinding in ``namespace``, or with None a ClusterRole and
    ClusterRoleBinding, named ``name``, giving ``rules`` to ``subject``."""
    kind = "Role" if namespace is not None else "ClusterRole"
    role = {"metadata": {"name": name}, "rules": [dict(r) for r in rules]}
    binding = {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name},
        "subjects": subject,
    }
    if namespace is not None:
        await _create_or_reuse(rbac.create_namespaced_role, namespace, role)
        await _create_or_reuse(rbac.create_namespaced_role_binding, namespace, binding)
    else:
        await _create_or_reuse(rbac.create_cluster_role, role)
        await _create_or_reuse(rbac.create_cluster_role_binding, binding)


async def service_account_kubeconfig(
    kube: KubePeer,
    namespace: str,
    name: str,
    *,
    rules: Sequence[Mapping[str, Any]] | None = None,
    cluster_rules: Sequence[Mapping[str, Any]] | None = None,
    path: Path | None = None,
    expiration_seconds: int = 3600,
) -> tuple[str, Path]:
    """Create a ServiceAccount (plus a Role/RoleBinding from ``rules`` and a
    ClusterRole/ClusterRoleBinding from ``cluster_rules``), request a token for it
    (TokenRequest API) and write a kubeconfig using that token.

    Returns ``(token, kubeconfig_path)``. Objects that already exist are reused.
    """
    from kubernetes_asyncio import client

    await ensure_namespace(kube, namespace)
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]
    async with kube.api_client() as api:
        core: Any = client.CoreV1Api(api)
        rbac: Any = client.RbacAuthorizationV1Api(api)
        await _create_or_reuse(
            core.create_namespaced_service_account, namespace, {"metadata": {"name": name}}
        )
        if rules is not None:
            await _grant(rbac, namespace=namespace, name=name, rules=rules, subject=subject)
        if cluster_rules is not None:
            await _grant(
                rbac,
                namespace=None,
                name=f"{namespace}-{name}",
                rules=cluster_rules,
                subject=subject,
            )
        token_request = await core.create_namespaced_service_account_token(
            name, namespace, {"spec": {"expirationSeconds": expiration_seconds}}
        )
    token: str = token_request.status.token
    target = path or kube.state_dir / f"kubeconfig-{namespace}-{name}"
    write_kubeconfig(
        target, server=kube.server, ca_file=kube.ca_file, token=token, user=f"{namespace}-{name}"
    )
    return token, target


# --- Jobs (no controller runs here: a Job's pods and status are written by the test) ---------


async def create_job(
    kube: KubePeer,
    namespace: str,
    name: str,
    labels: Mapping[str, str],
    *,
    backoff_limit: int = 6,
) -> Any:
    """Create a Job of one ``prefect-job`` container; returns it as a dict. Nothing runs it:
    give it pods with ``create_job_pod`` and a status with ``set_job_status``."""
    from kubernetes_asyncio import client

    await ensure_namespace(kube, namespace)
    body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "containers": [
                        {"name": "prefect-job", "image": "busybox", "command": ["true"]}
                    ],
                    "restartPolicy": "Never",
                },
            },
        },
    }
    async with kube.api_client() as api:
        batch: Any = client.BatchV1Api(api)
        job = await batch.create_namespaced_job(namespace, body)
        return api.sanitize_for_serialization(job)


async def create_job_pod(kube: KubePeer, job: Mapping[str, Any], name: str) -> Any:
    """A pod as the Job controller makes it: the Job's labels and selector labels, owned by
    the Job, with a ``prefect-job`` container."""
    from kubernetes_asyncio import client

    metadata = job["metadata"]
    labels = {**metadata.get("labels", {}), **job["spec"]["template"]["metadata"]["labels"]}
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "containers": [{"name": "prefect-job", "image": "busybox", "command": ["true"]}],
            "restartPolicy": "Never",
        },
    }
    async with kube.api_client() as api:
        core: Any = client.CoreV1Api(api)
        return await core.create_namespaced_pod(metadata["namespace"], body)


async def set_job_status(
    kube: KubePeer, namespace: str, name: str, status: Mapping[str, Any]
) -> Any:
    """Merge-patch ``jobs/status`` the way the Job controller writes it (counts such as
    ``failed``, ``active``, and ``conditions``, replaced whole)."""
    from kubernetes_asyncio import client

    async with kube.api_client() as api:
        batch: Any = client.BatchV1Api(api)
        return await batch.patch_namespaced_job_status(
            name,
            namespace,
            {"status": dict(status)},
            _content_type="application/merge-patch+json",
        )


async def delete_job(kube: KubePeer, namespace: str, name: str) -> None:
    """Delete a Job at once (in the background: no garbage collector runs here to remove an
    `orphan` finalizer, and none to delete its pods)."""
    from kubernetes_asyncio import client

    async with kube.api_client() as api:
        await client.BatchV1Api(api).delete_namespaced_job(
            name, namespace, grace_period_seconds=0, propagation_policy="Background"
        )
