"""/healthz, /readyz and /metrics on aiohttp (already a dependency of kubernetes_asyncio)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from infra_observer.config import HealthSettings

log = structlog.get_logger(__name__)

Check = Callable[[], list[str]]
"""Returns the problems found; an empty list means healthy."""


class HealthServer:
    def __init__(
        self,
        *,
        settings: HealthSettings,
        registry: CollectorRegistry,
        liveness: Check,
        readiness: Check,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._liveness = liveness
        self._readiness = readiness
        self.port: int | None = None
        self.started = asyncio.Event()

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._probe(self._liveness))
        app.router.add_get("/readyz", self._probe(self._readiness))
        app.router.add_get("/metrics", self._metrics)
        return app

    @staticmethod
    def _probe(check: Check) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(_: web.Request) -> web.Response:
            problems = check()
            if problems:
                return web.Response(status=503, text="\n".join(problems) + "\n")
            return web.Response(text="ok\n")

        return handler

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def run(self) -> None:
        """Serve until cancelled."""
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._settings.host, self._settings.port)
            await site.start()
            self.port = int(runner.addresses[0][1])
            log.info("health_listening", host=self._settings.host, port=self.port)
            self.started.set()
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
