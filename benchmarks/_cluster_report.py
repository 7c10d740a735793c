"""The table `benchmarks.cluster` prints: one row per measure, one column per observer."""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks._common import table
from benchmarks._flowruns import ROUTES

Row = tuple[str, str, str]
"""(label, path in an observer's results, unit)"""

ROWS: list[Row] = [
    ("RSS idle", "memory.idle_rss_mib", "MiB"),
    ("CPU idle", "memory.idle_cpu_ms_per_s", "ms/s"),
]


def _get(data: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _call_rows(label: str, key: str) -> list[Row]:
    """The orchestration-API calls of one scenario, in total and per flow run."""
    rows: list[Row] = [
        (
            f"{label}: lifecycle calls end after the events",
            f"{key}.lifecycle_seconds_after_events",
            "s",
        )
    ]
    for name, route in ROUTES:
        rows.append((f"{label}: {route}", f"{key}.calls.total.{name}", ""))
        rows.append((f"{label}: {route} per flow run", f"{key}.calls.per_flow_run.{name}", ""))
    rows.append(
        (f"{label}: runs InfrastructurePending after", f"{key}.states.InfrastructurePending", "")
    )
    return rows


def _e2e_rows(size: int, *, flow_runs: bool) -> list[Row]:
    key = f"memory.e2e_{size}"
    rows: list[Row] = [
        (f"e2e {size:,}: delivered events/s", f"{key}.delivered_per_second", "1/s"),
        (f"e2e {size:,}: latency p50", f"{key}.p50_ms", "ms"),
        (f"e2e {size:,}: latency p99", f"{key}.p99_ms", "ms"),
        (f"e2e {size:,}: CPU per transition", f"{key}.cpu_ms_per_transition", "ms"),
        (f"e2e {size:,}: CPU per new pod", f"{key}.cpu_ms_per_new_pod", "ms"),
        (f"e2e {size:,}: CPU per pod change, settled", f"{key}.cpu_ms_per_change", "ms"),
        (f"e2e {size:,}: events after deletion", f"{key}.events_after_deletion", ""),
        (f"e2e {size:,}: missing events", f"{key}.missing_total", ""),
    ]
    return rows + (_call_rows(f"e2e {size:,}", key) if flow_runs else [])


def _startup_rows(size: int, *, flow_runs: bool) -> list[Row]:
    key = f"startup_{size}"
    rows: list[Row] = [
        (f"start-up {size:,}: time to all delivered", f"{key}.seconds_to_all_delivered", "s"),
        (f"start-up {size:,}: events API reads", f"{key}.events_api_reads", ""),
        (f"start-up {size:,}: other API reads", f"{key}.other_api_reads", ""),
        (f"start-up {size:,}: RSS after", f"{key}.rss_mib", "MiB"),
        (f"start-up {size:,}: missing events", f"{key}.missing", ""),
    ]
    return rows + (_call_rows(f"start-up {size:,}", key) if flow_runs else [])


def rows_for(args: argparse.Namespace) -> list[Row]:
    flow_runs = bool(args.flow_runs)
    rows = list(ROWS)
    for size in args.e2e_sizes:
        rows += _e2e_rows(size, flow_runs=flow_runs)
    last, unlabelled = f"memory.e2e_{args.e2e_sizes[-1]}", args.unlabelled
    rows += [
        (f"RSS with {args.e2e_sizes[-1]:,} tracked pods", f"{last}.tracked_rss_mib", "MiB"),
        (
            f"RSS growth from {unlabelled:,} unlabelled pods",
            f"{last}.unlabelled_rss_growth_mib",
            "MiB",
        ),
    ]
    for size in args.startup_sizes if "startup" in args.scenarios else []:
        rows += _startup_rows(size, flow_runs=flow_runs)
    return rows


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    kinds = list(results)
    body = []
    for label, path, unit in rows_for(args):
        values = [_get(results[kind], path) for kind in kinds]
        ratio: Any = None
        if len(kinds) == 2 and all(isinstance(v, int | float) for v in values):
            ours, reference = values[kinds.index("ours")], values[kinds.index("reference")]
            if ours:
                ratio = f"{reference / ours:.1f}x"
        body.append([label, unit, *values, ratio])
    headers = ["measure", "unit", *kinds] + (["reference/ours"] if len(kinds) == 2 else [])
    if len(kinds) != 2:
        body = [row[:-1] for row in body]
    lifecycle = args.lifecycle or "default"
    flow_runs = f"flow runs {args.flow_runs}" if args.flow_runs else "random flow-run ids"
    title = (
        f"Cluster benchmarks (sink: {args.sink}, rate {args.rate:g}/s, "
        f"lifecycle {lifecycle}, {flow_runs})"
    )
    return table(title, headers, body)


def missing_totals(results: dict[str, dict[str, Any]]) -> None:
    for data in results.values():
        for key, value in data.get("memory", {}).items():
            if key.startswith("e2e_") and isinstance(value, dict):
                value["missing_total"] = sum(
                    value.get(phase, {}).get("missing", 0)
                    for phase in ("pending", "running", "succeeded")
                )


__all__ = ["missing_totals", "report"]
