"""`infra-observer check` with the lifecycle on: the orchestration API's line, and the
Kubernetes permissions each lifecycle switch needs, for a ServiceAccount without and then
with them, on the real kube-apiserver (RBAC) and the real Prefect server."""

from __future__ import annotations

import subprocess
import uuid

from tests.integration.test_daemon import BIN, kube_env
from tests.peers._util import free_port
from tests.peers.kube import KubePeer, service_account_kubeconfig
from tests.peers.prefect import PrefectPeer

POD_READS = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
LIFECYCLE_GRANTS = [
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
]
JOBS_RULE = '{apiGroups: ["batch"], resources: ["jobs"], verbs: ["get", "list", "watch"]}'
LOGS_RULE = '{apiGroups: [""], resources: ["pods/log"], verbs: ["get"]}'


def check(env: dict[str, str]) -> tuple[int, dict[str, str]]:
    """The exit code, and each output line by what it checked (`PASS`/`FAIL` kept)."""
    result = subprocess.run(
        [str(BIN), "check"], check=False, env=env, capture_output=True, text=True, timeout=120
    )
    lines: dict[str, str] = {}
    for line in result.stdout.splitlines():
        verdict, _, rest = line.partition(" ")
        peer, _, detail = rest.partition(": ")
        lines[peer] = f"{verdict} {detail}"
    return result.returncode, lines


async def test_check_names_the_switch_and_rule_for_each_missing_permission(
    kube: KubePeer, prefect: PrefectPeer
) -> None:
    namespace = f"check-{uuid.uuid4().hex[:8]}"
    _, kubeconfig = await service_account_kubeconfig(kube, namespace, "observer", rules=POD_READS)
    env = kube_env(kube, namespace, **prefect.env())
    env["INFRA_OBSERVER_KUBERNETES_KUBECONFIG"] = str(kubeconfig)

    code, lines = check(env)
    assert code == 1, lines
    assert lines["source kubernetes"].startswith("PASS")
    assert lines["lifecycle orchestration"] == (
        f"PASS POST {prefect.api_url}/flow_runs/filter answered: flow runs readable for proposals"
    )
    jobs = lines["lifecycle kubernetes jobs (batch)"]
    assert jobs.startswith("FAIL INFRA_OBSERVER_LIFECYCLE_PROPOSE_CRASHED needs get, list, watch")
    assert f"denied: get in namespace {namespace}, list in namespace {namespace}" in jobs
    assert f"add the RBAC rule {JOBS_RULE} to the daemon's Role" in jobs
    assert "or set INFRA_OBSERVER_LIFECYCLE_PROPOSE_CRASHED=false" in jobs
    logs = lines["lifecycle kubernetes pods/log"]
    assert logs.startswith("FAIL INFRA_OBSERVER_LIFECYCLE_CRASH_LOG_LINES needs get on pods/log")
    assert f"add the RBAC rule {LOGS_RULE}" in logs
    assert "INFRA_OBSERVER_LIFECYCLE_CRASH_LOG_LINES=0" in logs

    # Granted (a ClusterRole bound to the same ServiceAccount): every line passes.
    _, kubeconfig = await service_account_kubeconfig(
        kube, namespace, "observer", cluster_rules=LIFECYCLE_GRANTS
    )
    env["INFRA_OBSERVER_KUBERNETES_KUBECONFIG"] = str(kubeconfig)
    code, lines = check(env)
    assert code == 0, lines
    assert lines["lifecycle kubernetes jobs (batch)"] == (
        f"PASS get, list, watch on jobs (batch) allowed in namespace {namespace} "
        "(needed by INFRA_OBSERVER_LIFECYCLE_PROPOSE_CRASHED)"
    )
    assert lines["lifecycle kubernetes pods/log"].startswith("PASS get on pods/log allowed")


async def test_check_asks_only_what_the_switches_that_are_on_need(
    kube: KubePeer, prefect: PrefectPeer
) -> None:
    namespace = f"check-{uuid.uuid4().hex[:8]}"
    _, kubeconfig = await service_account_kubeconfig(kube, namespace, "observer", rules=POD_READS)
    env = kube_env(kube, namespace, **prefect.env())
    env["INFRA_OBSERVER_KUBERNETES_KUBECONFIG"] = str(kubeconfig)

    code, lines = check({**env, "INFRA_OBSERVER_LIFECYCLE_CRASH_LOG_LINES": "0"})
    assert code == 1, lines
    assert lines["lifecycle kubernetes jobs (batch)"].startswith("FAIL")
    assert "lifecycle kubernetes pods/log" not in lines

    code, lines = check({**env, "INFRA_OBSERVER_LIFECYCLE_PROPOSE_CRASHED": "false"})
    assert code == 0, lines
    assert "lifecycle orchestration" in lines
    assert not [peer for peer in lines if peer.startswith("lifecycle kubernetes")]

    code, lines = check({**env, "INFRA_OBSERVER_LIFECYCLE_ENABLED": "false"})
    assert code == 0, lines
    assert not [peer for peer in lines if peer.startswith("lifecycle")]


def test_check_fails_the_orchestration_line_when_the_api_is_unreachable(kube: KubePeer) -> None:
    api_url = f"http://127.0.0.1:{free_port()}/api"
    env = kube_env(kube, "default", PREFECT_API_URL=api_url)
    code, lines = check(env)
    assert code == 1, lines
    assert lines["lifecycle orchestration"].startswith(
        f"FAIL POST {api_url}/flow_runs/filter failed"
    )
    # The admin identity of the peer may do everything.
    assert lines["lifecycle kubernetes jobs (batch)"].startswith("PASS")
    assert lines["lifecycle kubernetes pods/log"].startswith("PASS")
