"""Command line: argv → settings → logging → the chosen command; exit codes.

Exit codes: 0 success, 1 failure at run time (or a failed check), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import sys
from collections.abc import Callable, Sequence
from typing import IO

import structlog

from infra_observer import __version__, app
from infra_observer.commands import CommandInputError, emit, show_config, validate
from infra_observer.config import (
    Settings,
    api_url_problem,
    configuration_warnings,
    load_settings,
    redact_credentials,
)
from infra_observer.errors import ConfigError, InfraObserverError
from infra_observer.events.handoff import Outcome
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
    parser.add_argument("--version", action="version", version=f"infra-observer {__version__}")
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
        "source's peer (Kubernetes, Docker, SQS) once. Prints WARN per setting that is "
        "accepted but probably a mistake (an unknown INFRA_OBSERVER_* variable, a credential "
        "unused or sent over plain http://), then PASS or FAIL per peer with the reason and "
        "the fix; exits 1 when any fails or no source is enabled. Secrets are never printed.",
    )
    show_config.add_parser(commands)
    commands.add_parser("version", help="print the version", description="Print the version.")
    emit.add_parser(commands)
    checker = commands.add_parser(
        "validate",
        help="check JSON lines of events against the catalog and the API limits",
        description="Read one event per line (as the stdout sink writes them, or as read back "
        "from the events API) and report, per line, every deviation from the infrastructure "
        "events catalog and the events API limits, then a summary. Exits 0 when every event "
        "is valid, 1 when any line is not or when there is no event at all, 2 when FILE "
        "cannot be read.",
    )
    checker.add_argument("file", metavar="FILE", help="file of JSON lines, or - for stdin")
    checker.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print only the lines with problems and the summary; nothing at all (exit 0) "
        "when every event is valid",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"infra-observer {__version__}")
        return EXIT_OK
    if args.command == "validate":
        return _validate(args.file, quiet=args.quiet)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"infra-observer: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log)
    return _configured(args, settings)


def _configured(args: argparse.Namespace, settings: Settings) -> int:
    """The commands that need the settings, once they are valid."""
    if args.command == "check":
        return _check(settings)
    if args.command == "config":
        return _show_config(settings, as_json=args.json, only_changed=args.changed)
    if args.command == "emit":
        return _emit(args, settings)
    return _run(settings)


def _run(settings: Settings) -> int:
    _log_warnings(settings)
    prepare_collector()
    try:
        with asyncio.Runner(loop_factory=daemon_loop_factory()) as runner:
            runner.run(app.run(settings))
    except Exception as exc:  # the daemon's last word: log every cause, exit non-zero
        causes = _leaves(exc)
        # Found only once running (a busy port, a missing file): still the configuration.
        if all(isinstance(cause, ConfigError) for cause in causes):
            for cause in causes:
                print(f"infra-observer: {redact_credentials(str(cause))}", file=sys.stderr)
            return EXIT_USAGE
        for cause in causes:
            ours = isinstance(cause, InfraObserverError)
            log.error(
                "daemon_failed",
                error=str(cause),
                kind=type(cause).__name__,
                exc_info=None if ours else cause,
            )
        return EXIT_FAILURE
    return EXIT_OK


def _log_warnings(settings: Settings) -> None:
    for warning in configuration_warnings(settings, os.environ):
        log.warning(
            warning.event,
            variable=warning.variable,
            problem=warning.message,
            closest=warning.closest,
        )
    problem = api_url_problem(settings.prefect)
    if problem is not None and settings.emitter.sink != "stdout":
        log.warning("api_url_without_api", variable="PREFECT_API_URL", problem=problem)


# Collections of the youngest generation, one per this many net allocations of containers.
# What each pod change leaves behind (the pod's state, its queued event) makes Python's
# default run a young collection every few dozen changes, and some of those walk the older
# generations too, where the tracked pods live: a higher threshold makes both rarer.
YOUNG_COLLECTION_ALLOCATIONS = 10_000


def prepare_collector() -> None:
    """The garbage collector's settings for the daemon; call once its set-up is done.

    Public `gc` API only, so not one of the tricks of `infra_observer.tuning`; what it pays
    is in docs/performance.md ("Speed tricks: what each one pays")."""
    # What is allocated by now (modules, classes, settings) lives as long as the process:
    # moved out of the collector's reach, full collections stop walking it again and again,
    # which delays the events behind them most when many pods are tracked.
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_ALLOCATIONS, middle, oldest)


def daemon_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (not on Windows): it handles each watch line's wake-up,
    TLS read and socket I/O in C, for less CPU per pod change (docs/performance.md)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _check(settings: Settings) -> int:
    for warning in configuration_warnings(settings, os.environ):
        print(f"WARN {warning.variable}: {warning.message}")
    try:
        results = asyncio.run(app.check(settings))
    except ConfigError as exc:
        print(f"infra-observer: {redact_credentials(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    for peer, passed, detail in results:
        print(f"{'PASS' if passed else 'FAIL'} {peer}: {redact_credentials(detail)}")
    return EXIT_OK if all(passed for _, passed, _ in results) else EXIT_FAILURE


def _show_config(settings: Settings, *, as_json: bool, only_changed: bool) -> int:
    # On stderr, so that stdout stays the configuration alone (and valid JSON with --json).
    for warning in configuration_warnings(settings, os.environ):
        print(f"WARN {warning.variable}: {warning.message}", file=sys.stderr)
    rows = show_config.rows(settings, os.environ)
    if only_changed:
        rows = show_config.changed(rows)
    print(show_config.as_json(rows) if as_json else show_config.as_table(rows))
    return EXIT_OK


def _emit(args: argparse.Namespace, settings: Settings) -> int:
    try:
        event = emit.event_from_args(args)
    except CommandInputError as exc:
        print(f"infra-observer emit {args.family}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        outcome = asyncio.run(
            emit.deliver(
                event,
                settings=settings,
                drain_seconds=args.timeout,
                retry=args.event_id is not None,
            )
        )
    except ConfigError as exc:
        print(f"infra-observer: {redact_credentials(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    # The event itself is the output (stdout sink); the outcome is in the logs on stderr.
    if outcome in (Outcome.DELIVERED, Outcome.DUPLICATE):
        return EXIT_OK
    # Not delivered: the exact event (its id included) goes where it can be retried from.
    kept = emit.keep_undelivered(event, out=args.out, stdout=sys.stdout.buffer)
    destination = redact_credentials(str(settings.prefect.api_url or "stdout"))
    advice = emit.not_delivered_advice(event, outcome=outcome, kept=kept, destination=destination)
    print(f"infra-observer emit: {advice}", file=sys.stderr)
    return EXIT_FAILURE


def _validate(path: str, *, quiet: bool) -> int:
    summary = validate.Summary()
    try:
        source = _open_input(path)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(f"infra-observer validate: cannot read {path}: {reason}", file=sys.stderr)
        return EXIT_USAGE
    with source as lines:
        for report in validate.check_lines(lines):
            summary.add(report)
            if quiet and report.ok:
                continue
            for problem in report.problems or ("OK",):
                print(f"line {report.line}: {problem}")
    if not (quiet and summary.ok):
        print(summary.text())
    return EXIT_OK if summary.ok else EXIT_FAILURE


def _open_input(path: str) -> contextlib.AbstractContextManager[IO[bytes]]:
    if path == "-":
        return contextlib.nullcontext(sys.stdin.buffer)
    return open(path, "rb")


if __name__ == "__main__":
    sys.exit(main())
