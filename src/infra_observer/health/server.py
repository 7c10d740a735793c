"""/healthz, /readyz and /metrics, served from one thread by the standard WSGI server.

prometheus_client already imports `wsgiref` and brings a threading WSGI server and the
metrics app, so the endpoints need no HTTP stack of their own. The probes' checks run on
the event loop: a probe hands its check over and waits for the answer, so a wedged loop
fails liveness instead of a thread answering as if all were well.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler

import structlog
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from infra_observer.config import HealthSettings
from infra_observer.errors import ConfigError

log = structlog.get_logger(__name__)

Check = Callable[[], list[str]]
"""Returns the problems found; an empty list means healthy."""

# Under the chart's probe timeout (3 s), so a wedged loop gets a 503, not a timeout.
LOOP_ANSWER_SECONDS = 2.0
# How soon the serving thread notices a shutdown request.
_POLL_SECONDS = 0.5

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _Server(ThreadingWSGIServer):
    def __init__(self, address: tuple[str, int], *, family: socket.AddressFamily) -> None:
        self.address_family = family
        super().__init__(address, _QuietHandler)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would flood the log; requests are not logged."""


class HealthServer:
    def __init__(
        self,
        *,
        settings: HealthSettings,
        registry: CollectorRegistry,
        liveness: Check,
        readiness: Check,
        loop_answer_seconds: float = LOOP_ANSWER_SECONDS,
    ) -> None:
        self._settings = settings
        self._probes = {"/healthz": liveness, "/readyz": readiness}
        self._metrics = make_wsgi_app(registry)
        self._loop_answer_seconds = loop_answer_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port: int | None = None
        self.started = asyncio.Event()

    async def run(self) -> None:
        """Serve until cancelled."""
        self._loop = asyncio.get_running_loop()
        server = _listen(self._settings.host, self._settings.port)
        server.set_app(self._app)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_SECONDS},
            name="health",
            daemon=True,
        )
        thread.start()
        try:
            self.port = int(server.server_address[1])
            log.info("health_listening", host=self._settings.host, port=self.port)
            self.started.set()
            await asyncio.Event().wait()
        finally:
            server.shutdown()  # returns once the serving thread has seen it
            server.server_close()

    def loop_lag_seconds(self) -> float:
        """How long the event loop takes to run a callback handed over now (from the serving
        thread, when scraped): measured only when asked, so it costs the loop nothing between
        scrapes."""
        started = time.monotonic()
        self._on_loop(_no_problems)
        return time.monotonic() - started

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            body: Iterable[bytes] = self._metrics(environ, start_response)
            return body
        check = self._probes.get(path)
        if check is None:
            return _text(start_response, "404 Not Found", "not found\n")
        problems = self._on_loop(check)
        if problems:
            return _text(start_response, "503 Service Unavailable", "\n".join(problems) + "\n")
        return _text(start_response, "200 OK", "ok\n")

    def _on_loop(self, check: Check) -> list[str]:
        """Run `check` on the event loop (from the serving thread) and wait for its answer."""
        answer: Future[list[str]] = Future()

        def run_check() -> None:
            try:
                answer.set_result(check())
            except Exception as exc:  # reported as the probe's problem
                answer.set_exception(exc)

        assert self._loop is not None  # set before the server starts
        try:
            self._loop.call_soon_threadsafe(run_check)
        except RuntimeError:  # closed
            return ["the event loop has stopped"]
        try:
            return answer.result(timeout=self._loop_answer_seconds)
        except TimeoutError:
            return [f"the event loop did not answer within {self._loop_answer_seconds} s"]
        except Exception as exc:
            return [f"the check failed: {type(exc).__name__}: {exc}"]


def _listen(host: str, port: int) -> _Server:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return _Server((host, port), family=family)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        fix = (
            "another process is listening there: stop it, or set INFRA_OBSERVER_HEALTH_PORT "
            "to a free port (0 picks any)"
            if exc.errno == errno.EADDRINUSE
            else "set INFRA_OBSERVER_HEALTH_HOST to an address of this machine (0.0.0.0: all) "
            "and INFRA_OBSERVER_HEALTH_PORT to a port this user may open"
        )
        raise ConfigError(
            f"the health server cannot listen on {host} port {port} "
            f"(INFRA_OBSERVER_HEALTH_HOST={host}, INFRA_OBSERVER_HEALTH_PORT={port}): "
            f"{reason}; {fix}"
        ) from exc


def _no_problems() -> list[str]:
    return []


def _text(start_response: StartResponse, status: str, text: str) -> list[bytes]:
    body = text.encode()
    start_response(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]
