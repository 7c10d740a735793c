"""Command line: argv → settings → logging → the chosen command; exit codes.

Exit codes: 0 success, 1 failure at run time (or a failed check), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import structlog

from infra_observer import __version__, app
from infra_observer.config import Settings, load_settings
from infra_observer.errors import ConfigError, InfraObserverError
from infra_observer.logs import configure_logging

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

log = structlog.get_logger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infra-observer",
        description="Watch where Prefect flow runs execute (Kubernetes pods, Docker containers, "
        "ECS tasks) and report every status change to the Prefect events API. Configured by "
        "environment variables: see docs/configuration.md.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "run",
        help="run the daemon",
        description="Run the enabled sources and deliver their events until SIGTERM or SIGINT. "
        "Events go to PREFECT_API_URL's events API, or to stdout as JSON lines when it is "
        "unset. Serves /healthz, /readyz and /metrics (INFRA_OBSERVER_HEALTH_*).",
    )
    commands.add_parser(
        "check",
        help="validate the configuration and reach every configured peer",
        description="Validate the configuration, then reach the events API and each enabled "
        "source's peer (Kubernetes, Docker, SQS) once. Prints PASS or FAIL per peer with the "
        "reason and the fix; exits 1 when any fails. Secrets are never printed.",
    )
    commands.add_parser("version", help="print the version", description="Print the version.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"infra-observer {__version__}")
        return EXIT_OK
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"infra-observer: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log)
    if args.command == "check":
        return _check(settings)
    return _run(settings)


def _run(settings: Settings) -> int:
    try:
        asyncio.run(app.run(settings))
    except ConfigError as exc:
        print(f"infra-observer: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # the daemon's last word: log every cause, exit non-zero
        for cause in _leaves(exc):
            ours = isinstance(cause, InfraObserverError)
            log.error(
                "daemon_failed",
                error=str(cause),
                kind=type(cause).__name__,
                exc_info=None if ours else cause,
            )
        return EXIT_FAILURE
    return EXIT_OK


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _check(settings: Settings) -> int:
    try:
        results = asyncio.run(app.check(settings))
    except ConfigError as exc:
        print(f"infra-observer: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for peer, passed, detail in results:
        print(f"{'PASS' if passed else 'FAIL'} {peer}: {detail}")
    return EXIT_OK if all(passed for _, passed, _ in results) else EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
