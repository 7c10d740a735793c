"""The chart's alert rules: rendered by the real helm, checked and unit-tested with promtool,
and evaluated by a real Prometheus scraping a running daemon while a fault is injected."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.integration.test_daemon import Daemon, daemons, kube_env, unique
from tests.integration.test_faults import PodDriver, proxy, ready_daemon
from tests.integration.test_helm_chart import CHART, helm_env, kinds, only, render, run_helm
from tests.peers.faulty_proxy import FaultyProxy, Mode
from tests.peers.kube import KubePeer
from tests.peers.prometheus import PrometheusPeer, promtool

__all__ = ["daemons", "helm_env", "proxy"]  # fixtures, imported so pytest finds them here

NAMESPACE = "observability"
PROMTOOL_TESTS = Path(__file__).resolve().parent / "data" / "alert-rules-test.yaml"
# Every rule rendered: leader election and the spool add theirs.
ALL_RULES = (
    "prometheusRule.enabled=true",
    "leaderElection.enabled=true",
    "replicaCount=2",
    "spool.enabled=true",
)
ALERTS = [
    "InfraObserverAbsent",
    "InfraObserverSourceNotReady",
    "InfraObserverEventsUndelivered",
    "InfraObserverEventsRejected",
    "InfraObserverBacklogFilling",
    "InfraObserverSpoolFull",
    "InfraObserverNoLeader",
    "InfraObserverEventLoopLagging",
    "InfraObserverLifecycleFailing",
    "InfraObserverLifecycleQueueFull",
]
ALERT_WAIT_SECONDS = 45.0


def rule_groups(env: Mapping[str, str], *sets: str, release: str = "obs") -> list[dict[str, Any]]:
    objects = render(env, sets=sets, release=release, namespace=NAMESPACE)
    groups: list[dict[str, Any]] = only(objects, "PrometheusRule")["spec"]["groups"]
    return groups


def write_rules(path: Path, groups: Sequence[Mapping[str, Any]]) -> Path:
    """A Prometheus rule file: what the Operator makes of the PrometheusRule's spec."""
    path.write_text(yaml.safe_dump({"groups": list(groups)}, sort_keys=False))
    return path


def alert_names(groups: Sequence[Mapping[str, Any]]) -> list[str]:
    return [rule["alert"] for group in groups for rule in group["rules"]]


def rule(groups: Sequence[Mapping[str, Any]], alert: str) -> dict[str, Any]:
    (found,) = [r for group in groups for r in group["rules"] if r["alert"] == alert]
    return dict(found)


def test_rules_are_off_by_default_and_follow_the_values(helm_env: dict[str, str]) -> None:
    assert "PrometheusRule" not in kinds(render(helm_env, namespace=NAMESPACE))
    assert alert_names(rule_groups(helm_env, *ALL_RULES)) == ALERTS
    # The spool's and leader election's alerts only with those features.
    plain = alert_names(rule_groups(helm_env, "prometheusRule.enabled=true"))
    assert plain == [
        a for a in ALERTS if a not in ("InfraObserverSpoolFull", "InfraObserverNoLeader")
    ]

    tuned_sets = (
        *ALL_RULES,
        "emitter.queueSize=1000",
        "prometheusRule.rules.backlogFilling.queuePercent=50",
        "prometheusRule.rules.noLeader.for=30s",
        "prometheusRule.rules.noLeader.severity=page",
        "prometheusRule.rules.eventLoopLag.enabled=false",
        "prometheusRule.additionalLabels.release=kube-prometheus-stack",
        "prometheusRule.namespace=monitoring",
        'prometheusRule.selector=job="io"',
        "prometheusRule.runbookBaseUrl=https://docs.example/production.md",
    )
    objects = render(helm_env, sets=tuned_sets, namespace=NAMESPACE)
    tuned = only(objects, "PrometheusRule")
    assert tuned["metadata"]["namespace"] == "monitoring"
    assert tuned["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    groups = tuned["spec"]["groups"]
    assert "InfraObserverEventLoopLagging" not in alert_names(groups)
    assert rule(groups, "InfraObserverBacklogFilling")["expr"].endswith('{job="io"} > 500')
    no_leader = rule(groups, "InfraObserverNoLeader")
    assert (no_leader["for"], no_leader["labels"]["severity"]) == ("30s", "page")
    assert no_leader["annotations"]["runbook_url"] == (
        "https://docs.example/production.md#infraobservernoleader"
    )


def test_rendered_rules_pass_promtool_check_and_unit_tests(
    helm_env: dict[str, str], tmp_path: Path
) -> None:
    """promtool's own parser, then series that make each alert fire and stay quiet
    (tests/integration/data/alert-rules-test.yaml)."""
    lint = run_helm(helm_env, "lint", "--strict", str(CHART), *(f"--set={s}" for s in ALL_RULES))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    rules = write_rules(tmp_path / "rules.yaml", rule_groups(helm_env, *ALL_RULES))
    checked = promtool("check", "rules", rules)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout

    tests = yaml.safe_load(PROMTOOL_TESTS.read_text())
    tests["rule_files"] = [str(rules)]
    unit_tests = tmp_path / "alert-rules-test.yaml"
    unit_tests.write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", unit_tests)
    assert result.returncode == 0, result.stdout + result.stderr
    # Each alert is seen firing, and seen quiet, at least once.
    cases = [case for test in tests["tests"] for case in test["alert_rule_test"]]
    assert {c["alertname"] for c in cases if c["exp_alerts"]} == set(ALERTS)
    assert {c["alertname"] for c in cases if not c["exp_alerts"]} == set(ALERTS)


def scrape_job(daemon: Daemon) -> dict[str, Any]:
    """The daemon as a target, labelled as the Operator labels a ServiceMonitor's targets."""
    return {"targets": [f"127.0.0.1:{daemon.port}"], "labels": {"namespace": NAMESPACE}}


async def alert_states(prometheus: PrometheusPeer, alert: str) -> list[str]:
    found = await asyncio.to_thread(prometheus.alerts)
    return [a["state"] for a in found if a["labels"]["alertname"] == alert]


async def wait_for_alert_state(
    prometheus: PrometheusPeer, alert: str, state: str, seen: list[str]
) -> None:
    """Poll the alerts API until ``alert`` is in ``state``; every state met goes to ``seen``."""
    deadline = time.monotonic() + ALERT_WAIT_SECONDS
    while True:
        states = await alert_states(prometheus, alert)
        for met in states:
            if not seen or seen[-1] != met:
                seen.append(met)
        if state in states or (state == "inactive" and not states):
            return
        assert time.monotonic() < deadline, f"{alert} never {state}: {seen}\n" + (
            await asyncio.to_thread(prometheus.diagnostics)
        )
        await asyncio.sleep(0.25)


async def scraped(prometheus: PrometheusPeer, expr: str) -> None:
    deadline = time.monotonic() + ALERT_WAIT_SECONDS
    while not await asyncio.to_thread(prometheus.query, expr):
        assert time.monotonic() < deadline, f"never true: {expr}"
        await asyncio.sleep(0.25)


async def test_a_refusing_events_api_makes_the_undelivered_alert_pending_then_firing(
    kube: KubePeer,
    proxy: FaultyProxy,
    *,
    prometheus: PrometheusPeer,
    daemons: list[Daemon],
    helm_env: dict[str, str],
    tmp_path: Path,
) -> None:
    namespace = unique("alerts")
    env = kube_env(kube, namespace, PREFECT_API_URL=proxy.api_url)
    daemon = await ready_daemon(env, tmp_path / "daemon.log", daemons)
    page = (await asyncio.to_thread(daemon.get, "/metrics")).text
    linted = promtool("check", "metrics", stdin=page)
    assert linted.returncode == 0, linted.stdout + linted.stderr

    fast = ("eventsUndelivered.for=5s", "eventsUndelivered.windowSeconds=5")
    groups = rule_groups(
        helm_env, "prometheusRule.enabled=true", *(f"prometheusRule.rules.{s}" for s in fast)
    )
    rules = write_rules(tmp_path / "rules.yaml", groups)
    try:
        prometheus.configure({"obs-infra-observer": scrape_job(daemon)}, [rules])
        pods = PodDriver(kube, namespace)
        await pods.step()  # delivered while the events API answers
        await scraped(
            prometheus, 'infra_observer_events_emitted_total{job="obs-infra-observer"} >= 1'
        )
        assert await alert_states(prometheus, "InfraObserverEventsUndelivered") == []

        await proxy.set_mode(Mode.REFUSE)
        await pods.step()
        seen: list[str] = []
        await wait_for_alert_state(prometheus, "InfraObserverEventsUndelivered", "firing", seen)
        assert seen == ["pending", "firing"], seen
        # Only that one: a source and the loop are fine, the daemon is scraped.
        active = await asyncio.to_thread(prometheus.alerts)
        assert {a["labels"]["alertname"] for a in active} == {"InfraObserverEventsUndelivered"}

        await proxy.set_mode(Mode.PASS)  # the next delivery clears it
        await wait_for_alert_state(prometheus, "InfraObserverEventsUndelivered", "inactive", seen)
    finally:
        prometheus.configure({}, [])
    assert await asyncio.to_thread(daemon.stop) == 0
    await pods.delete_all()


async def hold_lease(kube: KubePeer, name: str, holder: str | None) -> None:
    """Create the Lease in "default" held by ``holder`` for an hour, or free it (None)."""
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException

    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    spec = {"holderIdentity": holder, "leaseDurationSeconds": 3600, "renewTime": now}
    async with kube.api_client() as api:
        leases: Any = client.CoordinationV1Api(api)
        try:
            await leases.create_namespaced_lease(
                "default", {"metadata": {"name": name}, "spec": spec}
            )
            return
        except ApiException as exc:
            if exc.status != 409:
                raise
        await leases.patch_namespaced_lease(name, "default", {"spec": spec})


async def test_a_lease_held_elsewhere_fires_no_leader_and_no_source_alert(
    kube: KubePeer,
    prometheus: PrometheusPeer,
    *,
    daemons: list[Daemon],
    helm_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """A replica waiting for the Lease exports leader 0 and runs no source: the no-leader
    alert fires, the source alert leaves the standby out; once it leads, both are quiet."""
    lease = unique("lease")
    await hold_lease(kube, lease, "another-replica")
    env = kube_env(
        kube,
        unique("standby"),
        INFRA_OBSERVER_LEADER_ELECTION_ENABLED="true",
        INFRA_OBSERVER_LEADER_ELECTION_NAMESPACE="default",
        INFRA_OBSERVER_LEADER_ELECTION_LEASE_NAME=lease,
        INFRA_OBSERVER_LEADER_ELECTION_RETRY_PERIOD_SECONDS="0.5",
    )
    standby = await ready_daemon(env, tmp_path / "standby.log", daemons)
    page = (await asyncio.to_thread(standby.get, "/metrics")).text
    assert f'infra_observer_leader{{lease="{lease}"}} 0.0' in page
    assert "infra_observer_source_ready{" not in page
    fast = [f"prometheusRule.rules.{r}.for=3s" for r in ("noLeader", "sourceNotReady")]
    rule_sets = ("prometheusRule.enabled=true", "leaderElection.enabled=true", "replicaCount=2")
    groups = rule_groups(helm_env, *rule_sets, *fast, release="ha")
    try:
        prometheus.configure(
            {"ha-infra-observer": scrape_job(standby)}, [write_rules(tmp_path / "r.yaml", groups)]
        )
        seen: list[str] = []
        await wait_for_alert_state(prometheus, "InfraObserverNoLeader", "firing", seen)
        assert await alert_states(prometheus, "InfraObserverSourceNotReady") == []

        await hold_lease(kube, lease, None)  # freed: the standby takes it
        await wait_for_alert_state(prometheus, "InfraObserverNoLeader", "inactive", seen)
        await scraped(
            prometheus, f'infra_observer_leader{{job="ha-infra-observer",lease="{lease}"}} == 1'
        )
        await scraped(prometheus, 'infra_observer_source_ready{job="ha-infra-observer"} == 1')
        settled: list[str] = []
        await wait_for_alert_state(prometheus, "InfraObserverSourceNotReady", "inactive", settled)
        assert "firing" not in settled, settled
    finally:
        prometheus.configure({}, [])
    assert await asyncio.to_thread(standby.stop) == 0
