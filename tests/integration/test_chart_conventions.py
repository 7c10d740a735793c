"""The chart's conventions shared with kube-state-metrics and Bitnami charts, with the real
`helm` and, for installs, the real kube-apiserver: common labels and annotations, extra
objects and containers, the image registry, the token mount, probes, the disruption budget,
ServiceMonitor relabelings and the `helm test` hook (run here against a real daemon)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_helm_chart import (
    CHART,
    ROOT,
    TEMPLATE_KUBE_VERSION,
    client_as,
    container,
    create_namespace,
    helm_env,
    helm_install,
    only,
    read_deployment,
    render,
    run_helm,
    unique,
    wait_for,
)
from tests.peers import KubePeer
from tests.peers._util import free_port
from tests.peers.kube import service_account_kubeconfig

__all__ = ["helm_env"]  # the fixture, shared with test_helm_chart.py

TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}
# A projected token where the in-cluster loader reads it, for serviceAccount.automount=false.
TOKEN_VOLUME = {
    "name": "sa-token",
    "projected": {
        "sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
            {
                "configMap": {
                    "name": "kube-root-ca.crt",
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                }
            },
            {
                "downwardAPI": {
                    "items": [
                        {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                    ]
                }
            },
        ]
    },
}
TOKEN_MOUNT = {"name": "sa-token", "mountPath": TOKEN_DIR, "readOnly": True}
SIDECAR = {
    "name": "sidecar",
    "image": "registry.example.com/sidecar:1",
    "securityContext": RESTRICTED,
    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
}
INIT = {"name": "prepare", "image": "registry.example.com/prepare:1", "securityContext": RESTRICTED}
EXTRA_CONFIGMAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "{{ .Release.Name }}-extra"},
    "data": {"release": "{{ .Release.Name }}"},
}
EXTRA_STRING = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-raw\n"
# Every value this file adds, at once: what the install below sends to the API server.
CONVENTIONS: dict[str, Any] = {
    "commonLabels": {"team": "data-platform"},
    "commonAnnotations": {"owner": "data-platform@example.com"},
    "revisionHistoryLimit": 5,
    "serviceAccount": {"automount": False},
    "initContainers": [INIT],
    "extraContainers": [SIDECAR],
    "extraVolumes": [TOKEN_VOLUME, {"name": "scratch", "emptyDir": {}}],
    "extraVolumeMounts": [TOKEN_MOUNT],
    "extraObjects": [EXTRA_CONFIGMAP, EXTRA_STRING],
    "podDisruptionBudget": {"enabled": True, "minAvailable": 1},
}


def values_file(tmp_path: Path, values: Mapping[str, Any]) -> Path:
    path = tmp_path / "values.json"
    path.write_text(json.dumps(values))  # JSON is YAML and keeps the types
    return path


def hook_pod(objects: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    pods = [o for o in objects if o["kind"] == "Pod"]
    assert len(pods) == 1, [o["kind"] for o in objects]
    return dict(pods[0])


def template_fails(env: Mapping[str, str], *sets: str) -> str:
    """`helm template` with these --set values must fail; its stderr."""
    args = ["template", "obs", str(CHART), "--kube-version", TEMPLATE_KUBE_VERSION]
    result = run_helm(env, *args, *(a for s in sets for a in ("--set", s)))
    assert result.returncode != 0, result.stdout
    return result.stderr


# ------------------------------------------------------------------ chart metadata


def test_chart_metadata(helm_env: dict[str, str]) -> None:
    shown = run_helm(helm_env, "show", "chart", str(CHART))
    assert shown.returncode == 0, shown.stderr
    chart = yaml.safe_load(shown.stdout)
    assert chart["maintainers"] == [{"name": "infra-observer maintainers"}]
    assert chart["kubeVersion"] == ">=1.25.0-0"
    # Released together (scripts/release): the chart, the image and the package share one version.
    project = tomllib.loads((CHART.parents[1] / "pyproject.toml").read_text())["project"]
    assert chart["version"] == chart["appVersion"] == project["version"]
    older = run_helm(helm_env, "template", "obs", str(CHART), "--kube-version", "1.24.0")
    assert older.returncode != 0
    assert "incompatible with Kubernetes v1.24.0" in older.stderr, older.stderr


def test_lint_strict_with_every_convention_value(helm_env: dict[str, str], tmp_path: Path) -> None:
    values = values_file(tmp_path, CONVENTIONS)
    result = run_helm(helm_env, "lint", "--strict", str(CHART), "--values", str(values))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout
    assert "[ERROR]" not in result.stdout


# ------------------------------------------------------------------ rendered objects


def test_defaults_add_startup_probe_history_limit_and_token_mount(
    helm_env: dict[str, str],
) -> None:
    objects = render(helm_env)
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["revisionHistoryLimit"] == 3
    main = container(objects)
    assert main["image"] == "infra-observer:0.1.0"
    assert main["startupProbe"] == {
        "httpGet": {"path": "/healthz", "port": "http"},
        "initialDelaySeconds": 0,
        "periodSeconds": 2,
        "timeoutSeconds": 3,
        "failureThreshold": 30,
    }
    assert only(objects, "ServiceAccount")["automountServiceAccountToken"] is True
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    assert "initContainers" not in deployment["spec"]["template"]["spec"]
    assert [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]] == [
        "infra-observer"
    ]
    sharded = render(helm_env, CHART / "ci" / "sharded-values.yaml")
    assert only(sharded, "StatefulSet")["spec"]["revisionHistoryLimit"] == 3


@pytest.mark.parametrize(
    ("sets", "image"),
    [
        (["image.registry=registry.example.com"], "registry.example.com/infra-observer:0.1.0"),
        (["global.imageRegistry=mirror.example.com/"], "mirror.example.com/infra-observer:0.1.0"),
        (
            ["image.registry=registry.example.com", "global.imageRegistry=mirror.example.com"],
            "mirror.example.com/infra-observer:0.1.0",
        ),
        (
            ["image.registry=registry.example.com", "image.digest=sha256:" + "a" * 64],
            "registry.example.com/infra-observer@sha256:" + "a" * 64,
        ),
    ],
)
def test_image_registry_composes_the_reference(
    helm_env: dict[str, str], sets: list[str], image: str
) -> None:
    objects = render(helm_env, sets=sets)
    assert container(objects)["image"] == image
    assert hook_pod(objects)["spec"]["containers"][0]["image"] == image


def test_common_labels_and_annotations_reach_every_object(helm_env: dict[str, str]) -> None:
    objects = render(
        helm_env,
        CHART / "ci" / "observability-values.yaml",
        sets=[
            "commonLabels.team=data-platform",
            "commonLabels.app\\.kubernetes\\.io/part-of=platform",
            "commonAnnotations.owner=data-platform",
            "service.annotations.owner=metrics",
            "podLabels.team=observers",
        ],
    )
    for obj in objects:
        metadata = obj["metadata"]
        assert metadata["labels"]["team"] == "data-platform", obj["kind"]
        assert metadata["labels"]["app.kubernetes.io/part-of"] == "platform", obj["kind"]
        expected = "metrics" if obj["kind"] == "Service" else "data-platform"
        assert metadata["annotations"]["owner"] == expected, obj["kind"]
    deployment = only(objects, "Deployment")
    template = deployment["spec"]["template"]["metadata"]
    assert template["labels"]["team"] == "observers"  # podLabels win on the pods
    assert "owner" not in template["annotations"]  # podAnnotations are the pods' own
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "infra-observer",
        "app.kubernetes.io/instance": "obs",
    }


def test_common_labels_may_not_change_the_selector(helm_env: dict[str, str]) -> None:
    stderr = template_fails(helm_env, "commonLabels.app\\.kubernetes\\.io/name=other")
    assert "commonLabels sets app.kubernetes.io/name, a label of the workload's selector" in stderr


def test_extra_containers_volumes_and_objects(helm_env: dict[str, str], tmp_path: Path) -> None:
    objects = render(helm_env, values_file(tmp_path, CONVENTIONS), release="rel")
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["initContainers"] == [INIT]
    assert [c["name"] for c in pod["containers"]] == ["infra-observer", "sidecar"]
    assert pod["containers"][1] == SIDECAR
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["sa-token"] == TOKEN_VOLUME
    assert volumes["scratch"] == {"name": "scratch", "emptyDir": {}}
    assert TOKEN_MOUNT in pod["containers"][0]["volumeMounts"]
    # No automatic token: the projected one stands in for it.
    assert pod["automountServiceAccountToken"] is False
    assert only(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    configmaps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    assert set(configmaps) == {"rel-extra", "rel-raw"}
    assert configmaps["rel-extra"]["data"] == {"release": "rel"}


def test_automount_off_needs_a_token_mounted(helm_env: dict[str, str]) -> None:
    stderr = template_fails(helm_env, "serviceAccount.automount=false")
    assert "serviceAccount.automount is false, but the Kubernetes source" in stderr
    assert "mount a projected token there with extraVolumes and extraVolumeMounts" in stderr
    # Without a source that reads it, no token is needed at all.
    objects = render(
        helm_env, CHART / "ci" / "docker-ecs-values.yaml", sets=["serviceAccount.automount=false"]
    )
    assert (
        only(objects, "Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"]
        is False
    )


@pytest.mark.parametrize(
    ("sets", "spec"),
    [
        ([], {"maxUnavailable": 1}),
        (["podDisruptionBudget.minAvailable=1"], {"minAvailable": 1}),
        (["podDisruptionBudget.minAvailable=0"], {"minAvailable": 0}),
        (["podDisruptionBudget.maxUnavailable=50%"], {"maxUnavailable": "50%"}),
    ],
)
def test_disruption_budget_takes_min_available_or_max_unavailable(
    helm_env: dict[str, str], sets: list[str], spec: dict[str, Any]
) -> None:
    objects = render(helm_env, sets=["podDisruptionBudget.enabled=true", *sets])
    budget = only(objects, "PodDisruptionBudget")["spec"]
    assert {k: v for k, v in budget.items() if k != "selector"} == spec


def test_disruption_budget_refuses_both(helm_env: dict[str, str]) -> None:
    stderr = template_fails(
        helm_env,
        "podDisruptionBudget.enabled=true",
        "podDisruptionBudget.minAvailable=1",
        "podDisruptionBudget.maxUnavailable=1",
    )
    assert "podDisruptionBudget sets both minAvailable (1) and maxUnavailable (1)" in stderr


def test_service_monitor_relabelings(helm_env: dict[str, str], tmp_path: Path) -> None:
    relabel = [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}]
    drop = [{"sourceLabels": ["__name__"], "regex": "python_gc_.*", "action": "drop"}]
    values = {
        "serviceMonitor": {"enabled": True, "relabelings": relabel, "metricRelabelings": drop}
    }
    endpoint = only(render(helm_env, values_file(tmp_path, values)), "ServiceMonitor")
    assert endpoint["spec"]["endpoints"][0]["relabelings"] == relabel
    assert endpoint["spec"]["endpoints"][0]["metricRelabelings"] == drop
    plain = only(render(helm_env, sets=["serviceMonitor.enabled=true"]), "ServiceMonitor")
    assert "relabelings" not in plain["spec"]["endpoints"][0]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["revisionHistoryLimit=-1"], "at '/revisionHistoryLimit'"),
        (["commonLabels.team=1"], "at '/commonLabels/team': got number, want string"),
        (["commonAnnotations=x"], "at '/commonAnnotations': got string, want object"),
        (["image.registry=1"], "at '/image/registry': got number, want string"),
        (["global.imageRegistry=true"], "at '/global/imageRegistry': got boolean, want string"),
        (["serviceAccount.automount=yes"], "at '/serviceAccount/automount'"),
        (["startupProbe.periodSeconds=0"], "at '/startupProbe/periodSeconds'"),
        (["startupProbe.path=/readyz"], "at '/startupProbe': additional properties 'path'"),
        (["initContainers[0].image=x"], "at '/initContainers/0': missing property 'name'"),
        (["extraContainers=sidecar"], "at '/extraContainers': got string, want array"),
        (["extraObjects[0]=1"], "at '/extraObjects/0'"),
        (["podDisruptionBudget.minAvailable=half"], "at '/podDisruptionBudget/minAvailable'"),
        (["serviceMonitor.relabelings=drop"], "at '/serviceMonitor/relabelings'"),
        (["tests.enabled=no"], "at '/tests/enabled': got string, want boolean"),
    ],
)
def test_schema_rejects_wrong_types_of_the_new_values(
    helm_env: dict[str, str], sets: list[str], message: str
) -> None:
    stderr = template_fails(helm_env, *sets)
    assert "values don't meet the specifications of the schema" in stderr
    assert message in stderr, stderr


def test_hook_pod_asks_readyz_and_is_never_selected(helm_env: dict[str, str]) -> None:
    objects = render(helm_env, CHART / "ci" / "observability-values.yaml")
    pod = hook_pod(objects)
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["containers"][0]["command"][-1] == (
        "http://obs-infra-observer.observability.svc:8080/readyz"
    )
    # The daemon's own image: its venv's Python, as the Dockerfile's HEALTHCHECK uses it.
    python = spec["containers"][0]["command"][0]
    assert python in (ROOT / "Dockerfile").read_text()
    labels = pod["metadata"]["labels"]
    for selector in (
        only(objects, "Deployment")["spec"]["selector"]["matchLabels"],
        only(objects, "Service")["spec"]["selector"],
    ):
        assert not selector.items() <= labels.items()
    # The NetworkPolicy limits who reaches the port, and lets the hook in.
    sources = only(objects, "NetworkPolicy")["spec"]["ingress"][0]["from"]
    selected = [s["podSelector"]["matchLabels"] for s in sources if "podSelector" in s]
    assert selected == [{k: labels[k] for k in selected[0]}]
    assert "Pod" not in [o["kind"] for o in render(helm_env, sets=["tests.enabled=false"])]


# ------------------------------------------------------------------ the helm test hook, run


@contextlib.asynccontextmanager
async def daemon(
    kubeconfig: Path, tmp_path: Path
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process, Path]]:
    """The daemon (Kubernetes source, stdout sink) as a local process, once /healthz answers:
    its health URL, the process and its log."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "INFRA_OBSERVER_HEALTH_HOST": "127.0.0.1",
        "INFRA_OBSERVER_HEALTH_PORT": str(port),
        "INFRA_OBSERVER_KUBERNETES_ENABLED": "true",
        "INFRA_OBSERVER_KUBERNETES_KUBECONFIG": str(kubeconfig),
    }
    log = tmp_path / f"daemon-{port}.log"
    binary = Path(sys.executable).parent / "infra-observer"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            str(binary), "run", env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_for(f"{base}/healthz", process=process, log=log)
        yield base, process, log
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), timeout=60)


async def run_hook(command: Sequence[str], url: str) -> tuple[int, str]:
    """The hook container's command with this interpreter and a local URL for the Service's."""
    _, flag, script, _ = command
    assert flag == "-c"
    process = await asyncio.create_subprocess_exec(
        sys.executable, flag, script, url, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output = (await asyncio.wait_for(process.communicate(), 60))[0].decode()
    assert process.returncode is not None
    return process.returncode, output


async def test_hook_passes_on_a_ready_daemon_and_fails_with_what_readyz_said(
    kube: KubePeer, helm_env: dict[str, str], tmp_path: Path
) -> None:
    command = hook_pod(render(helm_env))["spec"]["containers"][0]["command"]
    async with daemon(kube.kubeconfig, tmp_path) as (base, process, log):
        await wait_for(f"{base}/readyz", process=process, log=log)
        code, output = await run_hook(command, f"{base}/readyz")
        assert code == 0, output
        assert f"{base}/readyz 200" in output
    # A ServiceAccount bound to nothing: the source never syncs, /readyz says so.
    namespace = unique("io-hook")
    _, nobody = await service_account_kubeconfig(
        kube, namespace, "nobody", path=tmp_path / "nobody-kubeconfig"
    )
    async with daemon(nobody, tmp_path) as (base, _, _):
        code, output = await run_hook(command, f"{base}/readyz")
        assert code == 1, output
        assert f"{base}/readyz 503" in output
        assert "source kubernetes has not synced yet" in output
    code, output = await run_hook(command, f"http://127.0.0.1:{free_port()}/readyz")
    assert code == 1
    assert "unreachable" in output


# ------------------------------------------------------------------ the real apiserver


async def test_install_with_every_convention_value_under_restricted_pod_security(
    kube: KubePeer, helm_env: dict[str, str]
) -> None:
    namespace = unique("io-conv")
    restricted = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/warn": "restricted",
    }
    await create_namespace(kube, namespace, restricted)
    installed = await helm_install(
        kube, helm_env, release="conv", namespace=namespace, values=CONVENTIONS
    )
    assert "PodSecurity" not in installed.stderr, installed.stderr
    deployment = await read_deployment(kube, namespace, "conv-infra-observer")
    assert deployment["spec"]["revisionHistoryLimit"] == 5
    assert deployment["metadata"]["labels"]["team"] == "data-platform"
    assert deployment["metadata"]["annotations"]["owner"] == "data-platform@example.com"
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"]["team"] == "data-platform"
    assert [c["name"] for c in template["spec"]["initContainers"]] == ["prepare"]
    assert [c["name"] for c in template["spec"]["containers"]] == ["infra-observer", "sidecar"]
    async with client_as(kube, kube.token) as admin:
        core = f"/api/v1/namespaces/{namespace}"
        account = (await admin.get(f"{core}/serviceaccounts/conv-infra-observer")).json()
        assert account["automountServiceAccountToken"] is False
        extra = (await admin.get(f"{core}/configmaps/conv-extra")).json()
        assert extra["data"] == {"release": "conv"}
        assert (await admin.get(f"{core}/configmaps/conv-raw")).status_code == 200
        budget = await admin.get(
            f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/conv-infra-observer"
        )
        assert budget.json()["spec"]["minAvailable"] == 1
        assert "maxUnavailable" not in budget.json()["spec"]
        # The pod the Deployment would make (init, sidecar, projected token) is admitted.
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "from-template"}}
        pod["metadata"]["labels"] = template["metadata"]["labels"]
        pod["spec"] = template["spec"]
        accepted = await admin.post(f"{core}/pods", params={"dryRun": "All"}, json=pod)
        assert accepted.status_code == 201, accepted.text
        assert "warning" not in accepted.headers, accepted.headers["warning"]
        await hook_is_stored_not_created_and_admitted(kube, helm_env, admin, namespace)


async def hook_is_stored_not_created_and_admitted(
    kube: KubePeer, env: Mapping[str, str], admin: Any, namespace: str
) -> None:
    """`helm test` creates the hook Pod, which needs a kubelet to run: here it is read from
    the release and checked by the API server's validation and admission (dryRun=All)."""
    args = ["get", "hooks", "conv", "--namespace", namespace, "--kubeconfig", str(kube.kubeconfig)]
    hooks = await asyncio.to_thread(run_helm, env, *args)
    assert hooks.returncode == 0, hooks.stderr
    pod = hook_pod([h for h in yaml.safe_load_all(hooks.stdout) if h])
    name = pod["metadata"]["name"]
    core = f"/api/v1/namespaces/{namespace}"
    assert (await admin.get(f"{core}/pods/{name}")).status_code == 404  # only at `helm test`
    assert pod["metadata"]["labels"]["team"] == "data-platform"
    accepted = await admin.post(f"{core}/pods", params={"dryRun": "All"}, json=pod)
    assert accepted.status_code == 201, accepted.text
    assert "warning" not in accepted.headers, accepted.headers["warning"]
