"""The Helm chart with the real `helm` and, for installs, the real kube-apiserver.

Rendering and linting need only `helm`; installs go into the harness's apiserver, whose RBAC
and PodSecurity admission are real. There is no kubelet, so the daemon runs here as a local
process holding a token of the ServiceAccount the chart installed, with the environment the
chart rendered into the stored Deployment.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.peers import KubePeer, PrefectPeer
from tests.peers._util import free_port, provisioned
from tests.peers.kube import (
    create_pod,
    delete_pod,
    ensure_namespace,
    service_account_kubeconfig,
    set_pod_phase,
)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "infra-observer"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
CONFIG_REFERENCE = ROOT / "docs" / "configuration.md"
# `helm template` has no cluster to ask; any version the chart supports will do.
TEMPLATE_KUBE_VERSION = "1.30.0"
WAIT_SECONDS = 90.0
POD_VERBS = {"get", "list", "watch"}
POD_READS = {"apiGroups": [""], "resources": ["pods"], "verbs": sorted(POD_VERBS)}
# What the lifecycle's default switches add: jobs for proposeCrashed, pods/log for
# crashLogLines above 0.
JOB_READS = {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": sorted(POD_VERBS)}
POD_LOG_READS = {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}
# Only ever through secretKeyRef.
CREDENTIAL_ENV = {
    "PREFECT_API_KEY",
    "PREFECT_API_AUTH_STRING",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
}
STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)


# ------------------------------------------------------------------ helm


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """helm's cache, config and data in a temp dir, never the user's."""
    home = tmp_path_factory.mktemp("helm-home")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def run_helm(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(provisioned("helm")), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def render(
    env: Mapping[str, str],
    *values_files: Path,
    sets: Sequence[str] = (),
    release: str = "obs",
    namespace: str = "observability",
) -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    args += ["--kube-version", TEMPLATE_KUBE_VERSION]
    for path in values_files:
        args += ["--values", str(path)]
    for item in sets:
        args += ["--set", item]
    result = run_helm(env, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def only(objects: Sequence[Mapping[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return dict(found[0])


def workload(objects: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The Deployment, or the StatefulSet when the Kubernetes source is sharded."""
    found = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    assert len(found) == 1, [o["kind"] for o in found]
    return dict(found[0])


def kinds(objects: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def container(objects: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    containers = workload(objects)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env_entries(objects: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    entries = container(objects).get("env", [])
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), f"duplicate env entries: {names}"
    return {e["name"]: e for e in entries}


def plain_env(objects: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    return {k: v["value"] for k, v in env_entries(objects).items() if "value" in v}


def documented_env() -> set[str]:
    return set(re.findall(r"^\| `([A-Z_]+)` \|", CONFIG_REFERENCE.read_text(), re.MULTILINE))


def values_id(path: Path | None) -> str:
    return "default" if path is None else path.name.removesuffix("-values.yaml")


ALL_VALUES: list[Path | None] = [None, *CI_VALUES]


def test_ci_values_cover_the_documented_combinations() -> None:
    assert {values_id(p) for p in CI_VALUES} >= {
        "cluster-wide",
        "namespaced",
        "created-secret",
        "existing-secret",
        "docker-ecs",
        "observability",
        "sharded",
    }


@pytest.mark.parametrize("values", ALL_VALUES, ids=values_id)
def test_lint_strict(helm_env: dict[str, str], values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + (["--values", str(values)] if values else [])
    result = run_helm(helm_env, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout
    assert "[ERROR]" not in result.stdout


def schema_paths_without_defaults(schema: Mapping[str, Any], values: Any, path: str) -> list[str]:
    """Keys the schema declares for the chart's own objects that values.yaml leaves out."""
    missing: list[str] = []
    if schema.get("additionalProperties") is not False or not isinstance(values, dict):
        return missing
    for key, sub in schema.get("properties", {}).items():
        where = f"{path}.{key}" if path else key
        if key == "global":
            continue  # set by a parent chart, never by this one
        if key not in values:
            missing.append(where)
        else:
            missing += schema_paths_without_defaults(sub, values[key], where)
    return missing


def test_schema_and_values_declare_the_same_keys() -> None:
    """values.yaml documents every key (lint already checks the other direction)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema_paths_without_defaults(schema, values, "") == []


# ------------------------------------------------------------------ rendered objects


@pytest.mark.parametrize("values", ALL_VALUES, ids=values_id)
def test_every_combination_is_hardened_and_keeps_secrets_out_of_env(
    helm_env: dict[str, str], values: Path | None
) -> None:
    objects = render(helm_env, *([values] if values else []))
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        missing = [label for label in STANDARD_LABELS if label not in labels]
        assert not missing, f"{obj['kind']} {obj['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"

    pod = workload(objects)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    main = container(objects)
    assert main["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert main["resources"]["requests"]
    assert main["resources"]["limits"]["memory"]

    port = {p["name"]: p["containerPort"] for p in main["ports"]}["http"]
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    env = env_entries(objects)
    assert env["INFRA_OBSERVER_HEALTH_HOST"]["value"] == "0.0.0.0"
    assert env["INFRA_OBSERVER_HEALTH_PORT"]["value"] == str(port)

    for name, entry in env.items():
        if name in CREDENTIAL_ENV:
            assert "value" not in entry, f"{name} must come from a Secret"
            assert "secretKeyRef" in entry["valueFrom"]
    undocumented = {
        name
        for name in env
        if name.startswith(("INFRA_OBSERVER_", "PREFECT_")) and name not in documented_env()
    }
    assert not undocumented, f"not in docs/configuration.md: {sorted(undocumented)}"

    service = only(objects, "Service")
    assert service["spec"]["selector"] == workload(objects)["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


@pytest.mark.parametrize("values", ALL_VALUES, ids=values_id)
def test_every_combination_is_a_configuration_the_daemon_accepts(
    helm_env: dict[str, str],
    values: Path | None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The rendered environment (Secrets and mounted files stood in for) loads without a
    configuration error."""
    from infra_observer.config import load_settings

    objects = render(helm_env, *([values] if values else []))
    for name in list(os.environ):
        if name.startswith(("INFRA_OBSERVER_", "PREFECT_", "AWS_")):
            monkeypatch.delenv(name)
    for name, entry in env_entries(objects).items():
        if "fieldRef" in entry.get("valueFrom", {}):
            value = "0"  # the downward API: here, the StatefulSet ordinal of the first shard
        else:
            value = entry.get("value", "user:secret-from-the-secret")
        if value.startswith("/etc/infra-observer/"):  # a volume the pod mounts
            mounted = tmp_path / value.removeprefix("/")
            if name.endswith("_CERT_PATH"):  # a directory of PEM files
                mounted.mkdir(parents=True)
            else:
                mounted.parent.mkdir(parents=True, exist_ok=True)
                mounted.touch()
            value = str(mounted)
        monkeypatch.setenv(name, value)
    settings = load_settings()
    env = plain_env(objects)
    assert settings.kubernetes.enabled is (env["INFRA_OBSERVER_KUBERNETES_ENABLED"] == "true")
    assert settings.docker.enabled is (env["INFRA_OBSERVER_DOCKER_ENABLED"] == "true")
    assert settings.ecs.enabled is (env["INFRA_OBSERVER_ECS_ENABLED"] == "true")
    assert settings.health.host == "0.0.0.0"
    namespaces = env.get("INFRA_OBSERVER_KUBERNETES_NAMESPACES", "")
    assert settings.kubernetes.namespaces == [n for n in namespaces.split(",") if n]


def test_default_values_watch_the_cluster_with_pod_reads_and_the_lifecycles_grants(
    helm_env: dict[str, str],
) -> None:
    objects = render(helm_env)
    assert kinds(objects) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Pod",  # the `helm test` hook
        "Service",
        "ServiceAccount",
    ]
    role = only(objects, "ClusterRole")
    assert role["rules"] == [POD_READS, JOB_READS, POD_LOG_READS]
    binding = only(objects, "ClusterRoleBinding")
    account = only(objects, "ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": "observability",
        }
    ]
    env = plain_env(objects)
    assert env["INFRA_OBSERVER_KUBERNETES_ENABLED"] == "true"
    assert env["INFRA_OBSERVER_KUBERNETES_NAMESPACES"] == ""
    assert "PREFECT_API_URL" not in env  # stdout sink until a URL is given
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is True
    assert pod["enableServiceLinks"] is False
    assert container(objects)["image"] == "infra-observer:0.1.0"


@pytest.mark.parametrize(
    ("sets", "rules"),
    [
        pytest.param(["lifecycle.enabled=false"], [POD_READS], id="lifecycle off: pod reads only"),
        pytest.param(
            ["lifecycle.proposeCrashed=false"], [POD_READS, POD_LOG_READS], id="no crashes: no jobs"
        ),
        pytest.param(
            ["lifecycle.crashLogLines=0"], [POD_READS, JOB_READS], id="no crash logs: no pods/log"
        ),
    ],
)
def test_each_lifecycle_grant_follows_the_switch_that_needs_it(
    helm_env: dict[str, str], sets: list[str], rules: list[dict[str, Any]]
) -> None:
    objects = render(helm_env, sets=sets)
    assert only(objects, "ClusterRole")["rules"] == rules
    env = plain_env(objects)
    assert (
        env["INFRA_OBSERVER_LIFECYCLE_ENABLED"]
        == str("lifecycle.enabled=false" not in sets).lower()
    )


def test_the_lifecycle_values_become_its_settings(helm_env: dict[str, str]) -> None:
    sets = ["lifecycle.proposePending=false", "lifecycle.crashLogLines=40", "lifecycle.queueSize=7"]
    env = plain_env(render(helm_env, sets=sets))
    lifecycle = {k: v for k, v in env.items() if k.startswith("INFRA_OBSERVER_LIFECYCLE_")}
    assert lifecycle == {
        "INFRA_OBSERVER_LIFECYCLE_ENABLED": "true",
        "INFRA_OBSERVER_LIFECYCLE_PROPOSE_PENDING": "false",
        "INFRA_OBSERVER_LIFECYCLE_PROPOSE_CRASHED": "true",
        "INFRA_OBSERVER_LIFECYCLE_DIAGNOSIS_LOGS": "true",
        "INFRA_OBSERVER_LIFECYCLE_CRASH_LOG_LINES": "40",
        "INFRA_OBSERVER_LIFECYCLE_QUEUE_SIZE": "7",
    }


def test_namespaced_values_make_one_role_per_namespace(helm_env: dict[str, str]) -> None:
    objects = render(helm_env, CHART / "ci" / "namespaced-values.yaml")
    assert "ClusterRole" not in kinds(objects)
    roles = {o["metadata"]["namespace"]: o for o in objects if o["kind"] == "Role"}
    bindings = {o["metadata"]["namespace"]: o for o in objects if o["kind"] == "RoleBinding"}
    assert set(roles) == set(bindings) == {"flows-a", "flows-b"}
    for namespace, role in roles.items():
        assert role["rules"] == [POD_READS, JOB_READS, POD_LOG_READS]
        assert bindings[namespace]["subjects"][0]["namespace"] == "observability"
    env = plain_env(objects)
    assert env["INFRA_OBSERVER_KUBERNETES_NAMESPACES"] == "flows-a,flows-b"
    assert env["INFRA_OBSERVER_KUBERNETES_LABEL_SELECTOR"] == "team=data"


def test_created_secret_holds_the_key_and_rolls_the_pods(helm_env: dict[str, str]) -> None:
    values = CHART / "ci" / "created-secret-values.yaml"
    objects = render(helm_env, values)
    secret = only(objects, "Secret")
    assert base64.b64decode(secret["data"]["api-key"]).decode() == "pnu_ci_not_a_real_key"
    ref = env_entries(objects)["PREFECT_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": secret["metadata"]["name"], "key": "api-key"}
    assert "PREFECT_API_AUTH_STRING" not in env_entries(objects)
    assert plain_env(objects)["PREFECT_API_URL"].startswith("https://api.prefect.cloud/api/")

    rotated = render(helm_env, values, sets=["prefect.credentials.value=pnu_rotated"])

    def checksum(objs: list[dict[str, Any]]) -> str:
        annotations = only(objs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/secret"])

    assert checksum(rotated) != checksum(objects)


def test_existing_secret_is_referenced_not_created(helm_env: dict[str, str]) -> None:
    objects = render(helm_env, CHART / "ci" / "existing-secret-values.yaml")
    assert "Secret" not in kinds(objects)
    ref = env_entries(objects)["PREFECT_API_AUTH_STRING"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "prefect-basic-auth", "key": "auth"}
    env = plain_env(objects)
    assert env["INFRA_OBSERVER_EMITTER_CA_BUNDLE"] == "/etc/infra-observer/ca/ca.crt"
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "prefect-ca", "configMap": {"name": "internal-ca"}} in pod["volumes"]


def test_docker_and_ecs_without_kubernetes_need_no_rbac(helm_env: dict[str, str]) -> None:
    objects = render(helm_env, CHART / "ci" / "docker-ecs-values.yaml")
    assert not {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} & set(kinds(objects))
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    env = plain_env(objects)
    assert env["INFRA_OBSERVER_KUBERNETES_ENABLED"] == "false"
    assert env["INFRA_OBSERVER_DOCKER_ENABLED"] == "true"
    assert env["INFRA_OBSERVER_DOCKER_HOST"] == "tcp://docker.example.internal:2376"
    assert env["INFRA_OBSERVER_DOCKER_TLS_VERIFY"] == "true"
    assert env["INFRA_OBSERVER_DOCKER_LABEL_FILTERS"] == "io.prefect.work-pool-name=docker-pool"
    assert env["INFRA_OBSERVER_ECS_ENABLED"] == "true"
    assert env["INFRA_OBSERVER_ECS_QUEUE_URL"].endswith("/prefect-ecs-events")
    assert env["INFRA_OBSERVER_ECS_REGION"] == "eu-west-1"
    assert env["INFRA_OBSERVER_ECS_CONCURRENCY"] == "5"
    entries = env_entries(objects)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert entries[name]["valueFrom"]["secretKeyRef"] == {
            "name": "aws-credentials",
            "key": name,
        }
    mounts = {m["name"]: m for m in container(objects)["volumeMounts"]}
    assert mounts["docker-tls"]["mountPath"] == env["INFRA_OBSERVER_DOCKER_CERT_PATH"]
    annotations = only(objects, "ServiceAccount")["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")


def test_observability_objects_and_leader_election(helm_env: dict[str, str]) -> None:
    objects = render(helm_env, CHART / "ci" / "observability-values.yaml")
    service = only(objects, "Service")
    monitor = only(objects, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert only(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1

    policy = only(objects, "NetworkPolicy")["spec"]
    egress_ports = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    # 4200 comes from prefect.apiUrl.
    assert {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP"), (4200, "TCP")} <= egress_ports
    assert policy["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]

    lease = only(objects, "Lease")
    lease_roles = [o for o in objects if o["kind"] == "Role"]
    assert len(lease_roles) == 1
    assert lease_roles[0]["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [lease["metadata"]["name"]],
            "verbs": ["get", "update", "patch"],
        }
    ]
    env = plain_env(objects)
    assert env["INFRA_OBSERVER_LEADER_ELECTION_ENABLED"] == "true"
    assert env["INFRA_OBSERVER_LEADER_ELECTION_LEASE_NAME"] == lease["metadata"]["name"]
    assert env["INFRA_OBSERVER_LEADER_ELECTION_NAMESPACE"] == "observability"
    assert env["INFRA_OBSERVER_EMITTER_SPOOL_DIR"] == "/var/lib/infra-observer/spool"
    assert only(objects, "Deployment")["spec"]["replicas"] == 2
    affinity = only(objects, "Deployment")["spec"]["template"]["spec"]["affinity"]
    assert "podAntiAffinity" in affinity


def test_shards_make_a_statefulset_whose_ordinals_are_the_shard_indexes(
    helm_env: dict[str, str],
) -> None:
    objects = render(helm_env, CHART / "ci" / "sharded-values.yaml")
    assert "Deployment" not in kinds(objects)
    shards = only(objects, "StatefulSet")
    assert shards["spec"]["replicas"] == 3
    assert shards["spec"]["podManagementPolicy"] == "Parallel"
    assert shards["spec"]["serviceName"] == only(objects, "Service")["metadata"]["name"]
    env = env_entries(objects)
    assert env["INFRA_OBSERVER_KUBERNETES_SHARD_COUNT"]["value"] == "3"
    assert env["INFRA_OBSERVER_KUBERNETES_SHARD_INDEX"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
    }
    assert "INFRA_OBSERVER_KUBERNETES_SHARD_COUNT" not in env_entries(render(helm_env))


def test_shards_need_the_pod_index_label(helm_env: dict[str, str]) -> None:
    args = ["template", "obs", str(CHART), "--kube-version", "1.27.0"]
    result = run_helm(helm_env, *args, "--set", "kubernetes.shards=2")
    assert result.returncode != 0
    assert "kubernetes.shards needs Kubernetes 1.28 or later" in result.stderr


def test_persistent_spool_uses_a_claim_and_recreate(helm_env: dict[str, str]) -> None:
    objects = render(helm_env, CHART / "ci" / "spool-persistence-values.yaml")
    claim = only(objects, "PersistentVolumeClaim")
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["spool"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    env = plain_env(objects)
    assert env["INFRA_OBSERVER_EMITTER_SPOOL_MAX_BYTES"] == "268435456"
    assert env["INFRA_OBSERVER_EMITTER_FLUSH_INTERVAL_SECONDS"] == "0.5"
    assert container(objects)["envFrom"] == [{"configMapRef": {"name": "infra-observer-tuning"}}]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert pod["priorityClassName"] == "system-cluster-critical"


def doc_value_blocks(path: Path) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", path.read_text(), re.DOTALL)


@pytest.mark.parametrize(
    "block", doc_value_blocks(ROOT / "docs" / "production.md"), ids=lambda b: b.split(":")[0]
)
def test_values_shown_in_the_production_guide_render(
    helm_env: dict[str, str], tmp_path: Path, block: str
) -> None:
    # Placeholders a reader fills in; everything else is taken as written.
    text = block.replace("sha256:...", "sha256:" + "0" * 64)
    values = tmp_path / "values.yaml"
    values.write_text(text)
    render(helm_env, values)


# ------------------------------------------------------------------ bad values


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["bogus=1"], "additional properties 'bogus' not allowed"),
        (["kubernetes.namespace=flows"], "at '/kubernetes': additional properties 'namespace'"),
        (["replicaCount=two"], "at '/replicaCount': got string, want integer"),
        (["kubernetes.enabled=yes"], "at '/kubernetes/enabled': got string, want boolean"),
        (["prefect.credentials.type=token"], "at '/prefect/credentials/type'"),
        (["kubernetes.namespaces={Flows_A}"], "at '/kubernetes/namespaces/0'"),
        (["prefect.apiUrl=prefect-server:4200"], "at '/prefect/apiUrl'"),
        (["image.pullPolicy=Sometimes"], "at '/image/pullPolicy'"),
        (["podAnnotations.a=1"], "at '/podAnnotations/a': got number, want string"),
    ],
)
def test_schema_rejects_bad_values_readably(
    helm_env: dict[str, str], sets: list[str], message: str
) -> None:
    args = ["template", "obs", str(CHART), "--kube-version", TEMPLATE_KUBE_VERSION]
    result = run_helm(helm_env, *args, *(a for s in sets for a in ("--set", s)))
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["prefect.apiUrl=https://x.example/api", "prefect.credentials.type=apiKey"],
            'prefect.credentials.type is "apiKey": set prefect.credentials.existingSecret',
        ),
        (["kubernetes.enabled=false"], "no source is enabled"),
        (
            ["kubernetes.shards=2", "leaderElection.enabled=true"],
            "kubernetes.shards and leaderElection.enabled exclude each other",
        ),
        (["kubernetes.shards=2", "replicaCount=2"], "leave replicaCount at 1"),
        (["kubernetes.shards=2", "docker.enabled=true"], "every shard would report them all"),
        (["ecs.enabled=true"], "ecs.enabled is true but ecs.queueUrl is empty"),
        (["terminationGracePeriodSeconds=10"], "must be longer than emitter.drainSeconds"),
        (
            ["extraEnv[0].name=PREFECT_API_KEY", "extraEnv[0].value=pnu_x"],
            "extraEnv sets PREFECT_API_KEY as a plain value",
        ),
    ],
)
def test_inconsistent_values_fail_with_the_fix(
    helm_env: dict[str, str], sets: list[str], message: str
) -> None:
    args = ["template", "obs", str(CHART), "--kube-version", TEMPLATE_KUBE_VERSION]
    result = run_helm(helm_env, *args, *(a for s in sets for a in ("--set", s)))
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "pnu_x" not in result.stderr


# ------------------------------------------------------------------ the real apiserver


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def ssl_context(kube: KubePeer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(kube.ca_file))


def client_as(kube: KubePeer, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=kube.server,
        verify=ssl_context(kube),
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


async def create_namespace(kube: KubePeer, name: str, labels: Mapping[str, str]) -> None:
    async with client_as(kube, kube.token) as admin:
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": labels},
        }
        response = await admin.post("/api/v1/namespaces", json=body)
        assert response.status_code == 201, response.text


async def helm_install(
    kube: KubePeer,
    env: Mapping[str, str],
    *,
    release: str,
    namespace: str,
    values: Mapping[str, Any] | None = None,
) -> subprocess.CompletedProcess[str]:
    args = ["install", release, str(CHART), "--namespace", namespace]
    args += ["--kubeconfig", str(kube.kubeconfig)]
    if values:
        # A values file (JSON is YAML) keeps types and any character in strings intact.
        path = Path(env["HOME"]) / f"values-{namespace}.json"
        path.write_text(json.dumps(values))
        args += ["--values", str(path)]
    result = await asyncio.to_thread(run_helm, env, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    status = await asyncio.to_thread(
        run_helm,
        env,
        "status",
        release,
        "--namespace",
        namespace,
        "--kubeconfig",
        str(kube.kubeconfig),
        "--output",
        "json",
    )
    assert json.loads(status.stdout)["info"]["status"] == "deployed"
    return result


async def can(
    client: httpx.AsyncClient,
    verb: str,
    resource: str,
    *,
    namespace: str = "",
    group: str = "",
    name: str = "",
    subresource: str = "",
) -> bool:
    """SelfSubjectAccessReview: what the holder of the client's token may do."""
    attributes = {
        "verb": verb,
        "resource": resource,
        "group": group,
        "namespace": namespace,
        "name": name,
        "subresource": subresource,
    }
    response = await client.post(
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        json={
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        },
    )
    assert response.status_code == 201, response.text
    return bool(response.json()["status"]["allowed"])


async def rules_review(client: httpx.AsyncClient, namespace: str) -> set[tuple[str, ...]]:
    """SelfSubjectRulesReview: every (group, resource, verb, name) granted in a namespace,
    by Roles there and by ClusterRoles."""
    response = await client.post(
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        json={
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectRulesReview",
            "spec": {"namespace": namespace},
        },
    )
    assert response.status_code == 201, response.text
    granted: set[tuple[str, ...]] = set()
    for rule in response.json()["status"]["resourceRules"]:
        for group in rule.get("apiGroups", [""]):
            for resource in rule.get("resources", []):
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or [""]:
                        granted.add((group, resource, verb, name))
    return granted


class Access:
    """What the chart's ServiceAccount may do beyond what every authenticated identity may
    (self reviews, public info): compared with a ServiceAccount bound to nothing."""

    def __init__(self, account: httpx.AsyncClient, nobody: httpx.AsyncClient) -> None:
        self.account = account
        self.nobody = nobody

    async def granted(self, namespace: str) -> set[tuple[str, ...]]:
        baseline = await rules_review(self.nobody, namespace)
        return await rules_review(self.account, namespace) - baseline


async def unbound_token(kube: KubePeer, namespace: str) -> str:
    token, _ = await service_account_kubeconfig(kube, namespace, "nobody")
    return token


POD_RULES = {("", "pods", verb, "") for verb in POD_VERBS}
LIFECYCLE_RULES = {("batch", "jobs", verb, "") for verb in POD_VERBS} | {
    ("", "pods/log", "get", "")
}
# Namespace labels: the restricted Pod Security level enforced, and warned about.
RESTRICTED_POD_SECURITY = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
}


async def read_deployment(kube: KubePeer, namespace: str, name: str) -> dict[str, Any]:
    async with client_as(kube, kube.token) as admin:
        response = await admin.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        assert response.status_code == 200, response.text
        deployment: dict[str, Any] = response.json()
        return deployment


# Where the API server takes each kind the chart renders (namespaced: {ns} is filled in).
API_PATHS = {
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
    "Secret": "/api/v1/namespaces/{ns}/secrets",
    "Service": "/api/v1/namespaces/{ns}/services",
    "PersistentVolumeClaim": "/api/v1/namespaces/{ns}/persistentvolumeclaims",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "StatefulSet": "/apis/apps/v1/namespaces/{ns}/statefulsets",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    "Lease": "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
    "PodDisruptionBudget": "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
    "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
    "ServiceMonitor": "/apis/monitoring.coreos.com/v1/namespaces/{ns}/servicemonitors",
    "Pod": "/api/v1/namespaces/{ns}/pods",
}

# The Prometheus Operator's CRD, reduced to what the API server needs to accept objects.
SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {
            "kind": "ServiceMonitor",
            "plural": "servicemonitors",
            "singular": "servicemonitor",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


async def ensure_service_monitor_crd(admin: httpx.AsyncClient) -> None:
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    created = await admin.post(path, json=SERVICE_MONITOR_CRD)
    assert created.status_code in (201, 409), created.text
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        crd = (await admin.get(f"{path}/servicemonitors.monitoring.coreos.com")).json()
        conditions = (crd.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            probe = await admin.get("/apis/monitoring.coreos.com/v1")
            served = probe.json().get("resources") or [] if probe.status_code == 200 else []
            if any(r["name"] == "servicemonitors" for r in served):
                return
        await asyncio.sleep(0.2)
    raise AssertionError("the ServiceMonitor CRD never became established")


@pytest.mark.parametrize("values", [None, CHART / "ci" / "sharded-values.yaml"], ids=values_id)
async def test_notes_name_the_workload_the_chart_installs(
    kube: KubePeer, helm_env: dict[str, str], values: Path | None
) -> None:
    """NOTES.txt as `helm install` prints it (a server-side dry run): its kubectl commands
    name the Deployment, or the StatefulSet when the Kubernetes source is sharded."""
    namespace, release = unique("io-notes"), unique("notes")
    await ensure_namespace(kube, namespace)
    files = [values] if values else []
    rendered = workload(render(helm_env, *files, release=release, namespace=namespace))
    args = ["install", release, str(CHART), "--namespace", namespace, "--dry-run=server"]
    args += ["--kubeconfig", str(kube.kubeconfig)]
    for path in files:
        args += ["--values", str(path)]
    result = await asyncio.to_thread(run_helm, helm_env, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    _, marker, notes = result.stdout.rpartition("\nNOTES:\n")
    assert marker, result.stdout
    kind = rendered["kind"].lower()
    target = f"{kind}/{rendered['metadata']['name']}"
    for command in ("rollout status", "logs", "exec"):
        assert f"{command} {target}" in notes, notes
    other = "deployment/" if kind == "statefulset" else "statefulset/"
    assert other not in notes, notes


@pytest.mark.parametrize("values", ALL_VALUES, ids=values_id)
async def test_every_combination_passes_server_side_validation(
    kube: KubePeer, helm_env: dict[str, str], values: Path | None
) -> None:
    """Each rendered object, sent with dryRun=All: the API server's own validation and
    admission (restricted Pod Security in warn mode included) accept it without a warning."""
    namespace = unique("io-dry")
    await create_namespace(kube, namespace, RESTRICTED_POD_SECURITY)
    for name in ("flows-a", "flows-b"):  # named by ci/namespaced-values.yaml
        await ensure_namespace(kube, name)
    objects = render(helm_env, *([values] if values else []), namespace=namespace)
    async with client_as(kube, kube.token) as admin:
        if any(o["kind"] == "ServiceMonitor" for o in objects):
            await ensure_service_monitor_crd(admin)
        for obj in objects:
            assert obj["kind"] in API_PATHS, f"add {obj['kind']} to API_PATHS"
            target = obj["metadata"].get("namespace", "")
            path = API_PATHS[obj["kind"]].format(ns=target)
            response = await admin.post(path, params={"dryRun": "All"}, json=obj)
            what = f"{obj['kind']} {obj['metadata']['name']}"
            assert response.status_code == 201, f"{what}: {response.text}"
            assert "warning" not in response.headers, f"{what}: {response.headers['warning']}"
        # The warning check is live: the Deployment without the chart's security context warns.
        deployment = json.loads(json.dumps(workload(objects)))
        del deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        path = API_PATHS[deployment["kind"]].format(ns=namespace)
        response = await admin.post(path, params={"dryRun": "All"}, json=deployment)
        assert "PodSecurity" in response.headers.get("warning", ""), response.headers


@pytest.mark.parametrize(
    ("lifecycle", "granted"),
    [
        pytest.param(True, POD_RULES | LIFECYCLE_RULES, id="default: pods, jobs and pods/log"),
        pytest.param(False, POD_RULES, id="lifecycle off: pod reads only"),
    ],
)
async def test_install_cluster_wide_grants_exactly_pod_reads(
    kube: KubePeer, helm_env: dict[str, str], lifecycle: bool, granted: set[tuple[str, ...]]
) -> None:
    namespace = unique("io-cluster")
    # Restricted Pod Security enforced on the namespace: its admission checks the pod below.
    await create_namespace(kube, namespace, RESTRICTED_POD_SECURITY)
    release = "obs"
    values = None if lifecycle else {"lifecycle": {"enabled": False}}
    installed = await helm_install(
        kube, helm_env, release=release, namespace=namespace, values=values
    )
    assert "PodSecurity" not in installed.stderr, installed.stderr
    assert "infra-observer" in installed.stdout  # NOTES.txt
    assert "/readyz" in installed.stdout

    account = f"{release}-infra-observer"
    token, _ = await service_account_kubeconfig(kube, namespace, account)
    other = unique("io-other")
    await ensure_namespace(kube, other)
    nobody_token = await unbound_token(kube, namespace)
    async with client_as(kube, token) as sa, client_as(kube, nobody_token) as nobody:
        await assert_reviews_grant_pod_reads_only(
            sa, nobody, namespace=namespace, other=other, granted=granted
        )
        await assert_the_api_serves_pod_reads_only(sa, namespace=namespace, other=other)
    await assert_restricted_admission_takes_the_template_pod(kube, namespace, account)


async def assert_reviews_grant_pod_reads_only(
    sa: httpx.AsyncClient,
    nobody: httpx.AsyncClient,
    *,
    namespace: str,
    other: str,
    granted: set[tuple[str, ...]],
) -> None:
    """The access reviews: pod reads (and the lifecycle's, when on) cluster-wide and in both
    namespaces, nothing else."""
    access = Access(sa, nobody)
    for scope in ("", namespace, other):
        for verb in POD_VERBS:
            assert await can(sa, verb, "pods", namespace=scope), (verb, scope)
    for verb in ("create", "update", "patch", "delete", "deletecollection"):
        assert not await can(sa, verb, "pods", namespace=other), verb
    logs = await can(sa, "get", "pods", namespace=other, subresource="log")
    assert logs == (("", "pods/log", "get", "") in granted)
    assert not await can(sa, "create", "pods", namespace=other, subresource="exec")
    assert not await can(sa, "list", "secrets", namespace=namespace)
    assert not await can(sa, "list", "secrets")
    assert not await can(sa, "list", "configmaps", namespace=namespace)
    assert not await can(sa, "list", "nodes")
    assert not await can(sa, "list", "deployments", group="apps", namespace=namespace)
    assert not await can(sa, "get", "leases", group="coordination.k8s.io", namespace=namespace)
    assert await access.granted(other) == granted
    assert await access.granted(namespace) == granted


async def assert_the_api_serves_pod_reads_only(
    sa: httpx.AsyncClient, *, namespace: str, other: str
) -> None:
    """And the API itself agrees: pods are listed and watched, secrets and pod creation
    are forbidden."""
    listed = await sa.get("/api/v1/pods", params={"labelSelector": "prefect.io/flow-run-id"})
    assert listed.status_code == 200, listed.text
    watched = await sa.get(
        f"/api/v1/namespaces/{other}/pods", params={"watch": "1", "timeoutSeconds": "1"}
    )
    assert watched.status_code == 200
    assert (await sa.get(f"/api/v1/namespaces/{namespace}/secrets")).status_code == 403
    created = await sa.post(
        f"/api/v1/namespaces/{other}/pods",
        json={
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "nope"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        },
    )
    assert created.status_code == 403


async def assert_restricted_admission_takes_the_template_pod(
    kube: KubePeer, namespace: str, deployment_name: str
) -> None:
    """The pod the Deployment would create passes the restricted Pod Security admission,
    and the same pod without the chart's security context is refused (the check is live)."""
    deployment = await read_deployment(kube, namespace, deployment_name)
    template = deployment["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "from-template"}}
    pod["metadata"]["labels"] = template["metadata"]["labels"]
    pod["spec"] = template["spec"]
    weakened = json.loads(json.dumps(pod))
    weakened["metadata"]["name"] = "weakened"
    del weakened["spec"]["securityContext"]
    del weakened["spec"]["containers"][0]["securityContext"]
    async with client_as(kube, kube.token) as admin:
        accepted = await admin.post(f"/api/v1/namespaces/{namespace}/pods", json=pod)
        assert accepted.status_code == 201, accepted.text
        refused = await admin.post(f"/api/v1/namespaces/{namespace}/pods", json=weakened)
        assert refused.status_code == 403, refused.text
        assert "violates PodSecurity" in refused.json()["message"]
    await delete_pod(kube, namespace, "from-template")


async def test_install_namespaced_with_leader_election_grants_nothing_more(
    kube: KubePeer, helm_env: dict[str, str]
) -> None:
    namespace = unique("io-rel")
    watched = [unique("io-flows"), unique("io-flows")]
    outside = unique("io-outside")
    for name in (namespace, *watched, outside):
        await ensure_namespace(kube, name)
    release = "obs"
    await helm_install(
        kube,
        helm_env,
        release=release,
        namespace=namespace,
        values={"kubernetes": {"namespaces": watched}, "leaderElection": {"enabled": True}},
    )
    account = f"{release}-infra-observer"
    lease = account
    token, _ = await service_account_kubeconfig(kube, namespace, account)
    nobody_token = await unbound_token(kube, namespace)
    async with client_as(kube, token) as sa, client_as(kube, nobody_token) as nobody:
        access = Access(sa, nobody)
        for scope in watched:
            assert await access.granted(scope) == POD_RULES | LIFECYCLE_RULES
            for verb in POD_VERBS:
                assert await can(sa, verb, "pods", namespace=scope)
        for verb in POD_VERBS:
            assert not await can(sa, verb, "pods"), f"cluster-wide {verb}"
            assert not await can(sa, verb, "pods", namespace=outside)
            assert not await can(sa, verb, "pods", namespace=namespace)
        assert await access.granted(outside) == set()
        assert await access.granted(namespace) == {
            ("coordination.k8s.io", "leases", verb, lease) for verb in ("get", "update", "patch")
        }
        leases = "coordination.k8s.io"
        assert await can(sa, "update", "leases", group=leases, namespace=namespace, name=lease)
        assert not await can(sa, "update", "leases", group=leases, namespace=namespace, name="x")
        assert not await can(sa, "create", "leases", group=leases, namespace=namespace)
        assert not await can(sa, "list", "leases", group=leases, namespace=namespace)

        assert (await sa.get("/api/v1/pods")).status_code == 403
        assert (await sa.get(f"/api/v1/namespaces/{outside}/pods")).status_code == 403
        assert (await sa.get(f"/api/v1/namespaces/{watched[0]}/pods")).status_code == 200
        # The chart created the Lease, so the daemon can take it with get and update alone.
        path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{lease}"
        current = await sa.get(path)
        assert current.status_code == 200, current.text
        body = current.json()
        body["spec"] = {"holderIdentity": "obs-0", "leaseDurationSeconds": 15}
        assert (await sa.put(path, json=body)).status_code == 200


async def test_upgrade_moves_the_roles_with_the_namespaces(
    kube: KubePeer, helm_env: dict[str, str]
) -> None:
    """docs/production.md: an upgrade that changes the namespaces replaces the Roles, and
    switching to cluster-wide swaps them for a ClusterRole."""
    namespace = unique("io-up")
    before, after = unique("io-flows"), unique("io-flows")
    for name in (namespace, before, after):
        await ensure_namespace(kube, name)
    release = "obs"
    await helm_install(
        kube,
        helm_env,
        release=release,
        namespace=namespace,
        values={"kubernetes": {"namespaces": [before]}},
    )
    account = f"{release}-infra-observer"
    token, _ = await service_account_kubeconfig(kube, namespace, account)

    async def upgrade(values: Mapping[str, Any]) -> None:
        path = Path(helm_env["HOME"]) / f"upgrade-{namespace}.json"
        path.write_text(json.dumps(values))
        result = await asyncio.to_thread(
            run_helm,
            helm_env,
            "upgrade",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--kubeconfig",
            str(kube.kubeconfig),
            "--values",
            str(path),
        )
        assert result.returncode == 0, result.stdout + result.stderr

    async with client_as(kube, token) as sa:
        assert await can(sa, "list", "pods", namespace=before)
        await upgrade({"kubernetes": {"namespaces": [after]}})
        assert not await can(sa, "list", "pods", namespace=before)
        assert await can(sa, "list", "pods", namespace=after)
        assert not await can(sa, "list", "pods")
        await upgrade({"kubernetes": {"namespaces": []}})
        assert await can(sa, "list", "pods")
    async with client_as(kube, kube.token) as admin:
        roles = await admin.get(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{after}/roles")
        assert roles.json()["items"] == []


def test_kind_walkthrough_values_lint_and_render(helm_env: dict[str, str]) -> None:
    values = ROOT / "deploy" / "kind" / "values.yaml"
    linted = run_helm(helm_env, "lint", "--strict", str(CHART), "--values", str(values))
    assert linted.returncode == 0, linted.stdout + linted.stderr
    objects = render(helm_env, values, release="infra-observer", namespace="infra-observer")
    assert container(objects)["image"] == "infra-observer:dev"
    assert container(objects)["imagePullPolicy"] == "Never"
    assert {o["metadata"]["namespace"] for o in objects if o["kind"] == "Role"} == {"flows"}


async def test_kind_walkthrough_values_install(kube: KubePeer, helm_env: dict[str, str]) -> None:
    namespace = unique("io-kind")
    await ensure_namespace(kube, namespace)
    await ensure_namespace(kube, "flows")  # step 4 creates it before installing
    values = yaml.safe_load((ROOT / "deploy" / "kind" / "values.yaml").read_text())
    await helm_install(kube, helm_env, release="infra-observer", namespace=namespace, values=values)
    token, _ = await service_account_kubeconfig(kube, namespace, "infra-observer")
    async with client_as(kube, token) as sa:
        assert await can(sa, "watch", "pods", namespace="flows")
        assert not await can(sa, "watch", "pods")


async def test_kind_walkthrough_jobs_are_valid_and_carry_prefect_labels(kube: KubePeer) -> None:
    """The demo Jobs pass the API server's validation, and their pods' labels are read by the
    daemon without a problem (the walkthrough's last step depends on both)."""
    from infra_observer.events.related import refs_from_labels

    jobs = [
        doc
        for doc in yaml.safe_load_all((ROOT / "deploy" / "kind" / "demo-job.yaml").read_text())
        if doc
    ]
    assert len(jobs) == 2
    await ensure_namespace(kube, "flows")
    async with client_as(kube, kube.token) as admin:
        for job in jobs:
            response = await admin.post(
                "/apis/batch/v1/namespaces/flows/jobs", params={"dryRun": "All"}, json=job
            )
            assert response.status_code == 201, response.text
            labels = job["spec"]["template"]["metadata"]["labels"]
            refs, problems = refs_from_labels(labels)
            assert problems == []
            assert refs.flow_run_id == labels["prefect.io/flow-run-id"]


# ------------------------------------------------------------------ the daemon as that account


async def chart_environment(kube: KubePeer, deployment: Mapping[str, Any]) -> dict[str, str]:
    """The container's env as the kubelet would resolve it (values and secretKeyRefs)."""
    namespace = deployment["metadata"]["namespace"]
    env: dict[str, str] = {}
    entries = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    async with client_as(kube, kube.token) as admin:
        for entry in entries:
            if "value" in entry:
                env[entry["name"]] = entry["value"]
                continue
            ref = entry["valueFrom"]["secretKeyRef"]
            response = await admin.get(f"/api/v1/namespaces/{namespace}/secrets/{ref['name']}")
            assert response.status_code == 200, response.text
            env[entry["name"]] = base64.b64decode(response.json()["data"][ref["key"]]).decode()
    return env


async def wait_for(url: str, *, process: asyncio.subprocess.Process, log: Path) -> str:
    """Poll a health endpoint until it answers 200 (a bound on waiting, not a timing test)."""
    deadline = time.monotonic() + WAIT_SECONDS
    last = ""
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                output = await asyncio.to_thread(log.read_text)
                raise AssertionError(f"daemon exited {process.returncode}:\n{output}")
            try:
                response = await client.get(url)
                last = f"{response.status_code} {response.text}"
                if response.status_code == 200:
                    return response.text
            except httpx.TransportError as exc:
                last = repr(exc)
            await asyncio.sleep(0.25)
    output = await asyncio.to_thread(log.read_text)
    raise AssertionError(f"{url} never answered 200 (last: {last}):\n{output}")


@pytest.fixture
def daemon_log(tmp_path: Path) -> Path:
    path = tmp_path / "daemon.log"
    path.touch()
    return path


async def test_daemon_runs_with_the_installed_service_account_and_secret(
    kube: KubePeer,
    prefect_basic_auth: PrefectPeer,
    helm_env: dict[str, str],
    daemon_log: Path,
    tmp_path: Path,
) -> None:
    prefect = prefect_basic_auth
    assert prefect.auth_string
    namespace = unique("io-run")
    flows = unique("io-flows")
    outside = unique("io-outside")
    for name in (namespace, flows, outside):
        await ensure_namespace(kube, name)
    account = await install_reporting_to(prefect, kube, helm_env, namespace=namespace, flows=flows)
    _, kubeconfig = await service_account_kubeconfig(
        kube, namespace, account, path=tmp_path / "sa-kubeconfig"
    )
    env = await chart_environment(kube, await read_deployment(kube, namespace, account))
    assert env["PREFECT_API_AUTH_STRING"] == prefect.auth_string  # from the chart's Secret
    health_port = free_port()
    env.update(as_local_process(kubeconfig, health_port=health_port, home=tmp_path))
    binary = Path(sys.executable).parent / "infra-observer"
    await assert_check_passes(binary, env, secret=prefect.auth_string)
    with daemon_log.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            str(binary), "run", env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        base = f"http://127.0.0.1:{health_port}"
        await wait_for(f"{base}/readyz", process=process, log=daemon_log)
        await assert_only_watched_pods_reach_prefect(kube, prefect, flows=flows, outside=outside)
        await assert_metrics_count_a_succeeded_pod(base)
    finally:
        await terminate(process)
    output = await asyncio.to_thread(daemon_log.read_text)
    assert process.returncode == 0, output
    assert prefect.auth_string not in output
    assert_a_clean_run(output)


async def install_reporting_to(
    prefect: PrefectPeer, kube: KubePeer, helm_env: dict[str, str], *, namespace: str, flows: str
) -> str:
    """The chart installed to watch `flows` and report to `prefect` with its auth string
    (through the chart's Secret); returns the ServiceAccount's name."""
    release = "obs"
    await helm_install(
        kube,
        helm_env,
        release=release,
        namespace=namespace,
        values={
            "prefect": {
                "apiUrl": prefect.api_url,
                "credentials": {"type": "authString", "value": prefect.auth_string},
            },
            "kubernetes": {"namespaces": [flows]},
            "log": {"level": "debug"},
        },
    )
    return f"{release}-infra-observer"


def as_local_process(kubeconfig: Path, *, health_port: int, home: Path) -> dict[str, str]:
    """What changes when the daemon is a local process: loopback only, and the
    ServiceAccount's token in a kubeconfig instead of the in-cluster mount."""
    return {
        "INFRA_OBSERVER_HEALTH_HOST": "127.0.0.1",
        "INFRA_OBSERVER_HEALTH_PORT": str(health_port),
        "INFRA_OBSERVER_KUBERNETES_KUBECONFIG": str(kubeconfig),
        "INFRA_OBSERVER_EMITTER_FLUSH_INTERVAL_SECONDS": "0.05",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
    }


async def assert_check_passes(binary: Path, env: Mapping[str, str], *, secret: str) -> None:
    """What NOTES.txt suggests (`kubectl exec ... infra-observer check`), with the same
    identity: the source and the sink pass, and the secret is not printed."""
    checked = await asyncio.create_subprocess_exec(
        str(binary), "check", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    check_output = (await asyncio.wait_for(checked.communicate(), WAIT_SECONDS))[0].decode()
    assert checked.returncode == 0, check_output
    assert "PASS source kubernetes" in check_output
    assert "PASS sink" in check_output
    assert secret not in check_output


async def assert_only_watched_pods_reach_prefect(
    kube: KubePeer, prefect: PrefectPeer, *, flows: str, outside: str
) -> None:
    """A flow run's pod in the watched namespace reports its phases; the same pod in a
    namespace the chart does not watch reports nothing."""
    flow_run = str(uuid.uuid4())
    labels = {"prefect.io/flow-run-id": flow_run}
    pod = await create_pod(kube, flows, "flow-pod", labels)
    ignored = await create_pod(kube, outside, "flow-pod", labels)
    await set_pod_phase(kube, flows, "flow-pod", "Running")
    await set_pod_phase(kube, flows, "flow-pod", "Succeeded")
    await set_pod_phase(kube, outside, "flow-pod", "Running")
    stored = await prefect.wait_for_events(
        expected_count=3,
        timeout=WAIT_SECONDS,
        resource_ids=[f"prefect.kubernetes.pod.{pod.metadata.uid}"],
    )
    assert sorted(e["event"] for e in stored) == sorted(
        f"prefect.kubernetes.pod.{phase}" for phase in ("pending", "running", "succeeded")
    )
    assert {e["resource"]["kubernetes.namespace"] for e in stored} == {flows}
    not_watched = await prefect.read_events(
        resource_ids=[f"prefect.kubernetes.pod.{ignored.metadata.uid}"]
    )
    assert not_watched == []


async def assert_metrics_count_a_succeeded_pod(base: str) -> None:
    """The health server is up and its metrics count the succeeded event."""
    async with httpx.AsyncClient(timeout=5) as client:
        metrics = (await client.get(f"{base}/metrics")).text
        assert (await client.get(f"{base}/healthz")).status_code == 200
    emitted = re.search(
        r'^infra_observer_events_emitted_total\{event="prefect\.kubernetes\.pod\.succeeded",'
        r'source="kubernetes"\} (\S+)$',
        metrics,
        re.MULTILINE,
    )
    assert emitted, metrics
    assert float(emitted.group(1)) >= 1


async def terminate(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, as Kubernetes stops a pod; SIGKILL if it does not exit in time."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=WAIT_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()


def assert_a_clean_run(output: str) -> None:
    """A clean run as that account: ready, and no warning or error (a 403 would be one) in
    the JSON logs."""
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any(r.get("event") == "kubernetes_ready" for r in records), output
    troubles = [r for r in records if r.get("level") in ("warning", "error", "critical")]
    assert troubles == [], troubles
