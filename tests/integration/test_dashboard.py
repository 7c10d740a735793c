"""The Grafana dashboard: what scripts/gen-dashboard writes, every query parsed by promtool and
naming only metrics a running daemon exports, shipped by the chart only when asked."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_alerts import write_rules
from tests.integration.test_daemon import Daemon, daemons, kube_env, unique
from tests.integration.test_faults import ready_daemon
from tests.integration.test_helm_chart import CHART, ROOT, helm_env, kinds, only, render
from tests.peers.kube import KubePeer
from tests.peers.prefect import PrefectPeer
from tests.peers.prometheus import promtool

__all__ = ["daemons", "helm_env"]  # fixtures, imported so pytest finds them here

GENERATOR = ROOT / "scripts" / "gen-dashboard"
DASHBOARD = ROOT / "deploy" / "grafana" / "infra-observer.json"
CHART_COPY = CHART / "dashboards" / "infra-observer.json"
ROWS = ["Events", "Delivery", "Backlog and spool", "Sources", "Flow-run lifecycle"]
# What Grafana puts in place of each variable: picked values of a multi-value variable
# become a regex alternation.
VALUES = {
    "namespace": "(observability|flows)",
    "job": "(obs-infra-observer)",
    "source": "(kubernetes|docker)",
    "__rate_interval": "2m",
}
VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
LABEL_VALUES = re.compile(r"label_values\((?P<series>.+), *(?P<label>\w+)\)")
# PromQL words that are not metric names, and the clauses whose parentheses hold label names.
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels(board: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' own included."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(board: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and of every query variable's series."""
    found = [
        (f"panel {panel['title']!r} {target['refId']}", target["expr"])
        for panel in panels(board)
        for target in panel.get("targets", [])
    ]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            match = LABEL_VALUES.fullmatch(variable["query"])
            assert match, f"variable {variable['name']}: not label_values(series, label)"
            found.append((f"variable {variable['name']}", match["series"]))
    return found


def substitute(expr: str) -> str:
    """``expr`` as Grafana sends it, its variables replaced by values from VALUES."""

    def value(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        assert name in VALUES, f"no test value for ${name} in {expr}"
        return VALUES[name]

    return VARIABLE.sub(value, expr)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: what is left once strings, label matchers,
    ranges, label lists, numbers, functions and keywords are taken out."""
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', " ", expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = LABEL_LISTS.sub(" ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[a-zA-Z_:][\w:]*", text):
        called = text[match.end() :].lstrip().startswith("(")
        if not called and match[0].lower() not in KEYWORDS:
            names.add(match[0])
    return names


def exported_names(page: str) -> set[str]:
    """The series names of a /metrics page, families without samples yet included."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    return {
        family.name + suffix
        for family in text_string_to_metric_families(page)
        for suffix in suffixes.get(family.type, [""])
    }


def test_the_committed_dashboard_is_what_the_generator_writes() -> None:
    generated = subprocess.run(
        [sys.executable, str(GENERATOR), "--stdout"], capture_output=True, check=True, timeout=120
    ).stdout.decode()
    for copy in (DASHBOARD, CHART_COPY):
        assert copy.read_text(encoding="utf-8") == generated, (
            f"{copy.relative_to(ROOT)} is stale: run .venv/bin/python scripts/gen-dashboard"
        )
    board = json.loads(generated)
    assert [p["title"] for p in board["panels"] if p["type"] == "row"] == ROWS
    variables = [v["name"] for v in board["templating"]["list"]]
    assert variables == ["datasource", "namespace", "job", "source"]
    for panel in panels(board):
        targets = panel.get("targets", [])
        assert len({t["refId"] for t in targets}) == len(targets), panel["title"]
        for target in targets:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            # A legend can only name labels the query keeps.
            legend = set(re.findall(r"\{\{ *(\w+) *\}\}", target["legendFormat"]))
            kept = {
                label.strip()
                for clause in re.findall(r"\bby \(([^)]*)\)", target["expr"])
                for label in clause.split(",")
            }
            assert legend <= kept, f"{panel['title']} {target['refId']}: {legend - kept}"


def test_every_query_parses_with_promtool(tmp_path: Path) -> None:
    """Each query, its variables substituted, as a recording rule: promtool parses and
    type-checks it as Prometheus would."""
    found = queries(dashboard())
    rules = [
        {"record": f"infra_observer_dashboard:query_{number}", "expr": substitute(expr)}
        for number, (_, expr) in enumerate(found)
    ]
    path = write_rules(tmp_path / "dashboard-rules.yaml", [{"name": "dashboard", "rules": rules}])
    checked = promtool("check", "rules", path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout


def test_metric_names_are_what_an_expression_selects() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{job=~"x|y"}[5m] offset 1h)))'
        ' / on (instance) group_left (pod) b_total{le="0.5"} and time() - c > 1e3'
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


async def test_every_query_names_only_metrics_the_daemon_exports(
    kube: KubePeer, prefect: PrefectPeer, *, daemons: list[Daemon], tmp_path: Path
) -> None:
    """A daemon's /metrics (the Kubernetes source's metrics included) holds every series a
    query selects: counters with `_total`, histograms with `_bucket`, `_sum` and `_count`."""
    env = kube_env(kube, unique("dashboard"), PREFECT_API_URL=prefect.api_url)
    daemon = await ready_daemon(env, tmp_path / "daemon.log", daemons)
    page = (await asyncio.to_thread(daemon.get, "/metrics")).text
    exported = exported_names(page)
    assert "infra_observer_batch_seconds_bucket" in exported

    unknown = []
    for where, expr in queries(dashboard()):
        names = metric_names(expr)
        assert names, f"{where} selects no metric: {expr}"
        unknown += [f"{where}: {name}" for name in sorted(names - exported)]
    assert unknown == [], "not exported by the daemon: " + "; ".join(unknown)
    assert await asyncio.to_thread(daemon.stop) == 0


def test_the_chart_ships_the_dashboard_only_when_enabled(helm_env: dict[str, str]) -> None:
    assert "ConfigMap" not in kinds(render(helm_env))

    sets = ("dashboards.enabled=true", "dashboards.annotations.grafana_folder=Prefect")
    config_map = only(render(helm_env, sets=sets), "ConfigMap")
    metadata = config_map["metadata"]
    assert metadata["labels"]["grafana_dashboard"] == "1"
    assert metadata["labels"]["app.kubernetes.io/instance"] == "obs"
    assert metadata["annotations"] == {"grafana_folder": "Prefect"}
    assert metadata["namespace"] == "observability"
    text = CHART_COPY.read_text(encoding="utf-8")
    assert config_map["data"] == {"infra-observer.json": text.rstrip("\n")}
    assert json.loads(config_map["data"]["infra-observer.json"]) == dashboard()

    moved = (
        "dashboards.enabled=true",
        "dashboards.namespace=monitoring",
        "dashboards.labels.team=platform",
    )
    elsewhere = only(render(helm_env, sets=moved), "ConfigMap")["metadata"]
    assert elsewhere["namespace"] == "monitoring"
    assert {"grafana_dashboard": "1", "team": "platform"}.items() <= elsewhere["labels"].items()
