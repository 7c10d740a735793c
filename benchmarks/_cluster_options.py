"""The command line of `benchmarks.cluster`: its options, their defaults and checks."""

from __future__ import annotations

import argparse
import sys

from benchmarks._harness import reference_available


def _parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="1,000 pods only")
    parser.add_argument("--observers", default="ours,reference")
    parser.add_argument("--sink", choices=["prefect", "loopback"], default="prefect")
    parser.add_argument("--scenarios", default="e2e,startup")
    parser.add_argument("--rate", type=float, default=200.0, help="writes per second")
    parser.add_argument("--e2e-sizes", default=None, help="comma-separated pod counts")
    parser.add_argument("--startup-sizes", default=None, help="comma-separated pod counts")
    parser.add_argument("--unlabelled", type=int, default=None)
    parser.add_argument(
        "--flush-interval",
        type=float,
        default=None,
        help="INFRA_OBSERVER_EMITTER_FLUSH_INTERVAL_SECONDS for ours (default: the daemon's)",
    )
    parser.add_argument(
        "--read-coalesce",
        type=float,
        default=None,
        help="INFRA_OBSERVER_KUBERNETES_READ_COALESCE_SECONDS for ours (default: the daemon's)",
    )
    parser.add_argument(
        "--flow-runs",
        nargs="?",
        const="SCHEDULED",
        default=None,
        type=str.upper,
        choices=["SCHEDULED", "PENDING", "RUNNING"],
        help="create the pods' flow runs on the Prefect server first, in this state "
        "(default SCHEDULED), and count the orchestration-API calls per flow run",
    )
    parser.add_argument(
        "--lifecycle",
        choices=["on", "off"],
        default=None,
        help="INFRA_OBSERVER_LIFECYCLE_ENABLED for ours (default: the daemon's)",
    )
    parser.add_argument(
        "--startup-timeout-per-pod", type=float, default=0.05, help="seconds of waiting per pod"
    )
    return parser


def parse_args(description: str) -> argparse.Namespace:
    parser = _parser(description)
    args = parser.parse_args()
    default_sizes = "1000" if args.quick else "1000,10000"
    args.e2e_sizes = [int(n) for n in (args.e2e_sizes or default_sizes).split(",")]
    args.startup_sizes = [int(n) for n in (args.startup_sizes or default_sizes).split(",")]
    if args.unlabelled is None:
        args.unlabelled = 2_000 if args.quick else 10_000
    args.observers = [kind.strip() for kind in args.observers.split(",") if kind.strip()]
    args.scenarios = [name.strip() for name in args.scenarios.split(",")]
    if args.flow_runs and args.sink != "prefect":
        parser.error("--flow-runs needs the Prefect server: --sink prefect")
    if "reference" in args.observers:
        if args.sink != "prefect":
            parser.error("the reference observer needs the Prefect server: --sink prefect")
        why = reference_available()
        if why:
            print(f"reference observer not available: {why}", file=sys.stderr)
            args.observers.remove("reference")
    return args


__all__ = ["parse_args"]
