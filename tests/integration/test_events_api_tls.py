"""The events API behind TLS: a certificate that does not verify, and a custom CA bundle."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from infra_observer.config import EmitterSettings, PrefectSettings
from infra_observer.emitter import events_api_sink
from infra_observer.errors import MisconfiguredSinkError
from tests.peers._util import free_port, make_certificate


@pytest.fixture
async def tls_api(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    cert, key = make_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def accept(_: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/api/events", accept)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    yield f"https://127.0.0.1:{port}/api", cert
    await runner.cleanup()


async def test_an_unverifiable_certificate_names_the_fix(tls_api: tuple[str, Path]) -> None:
    url, _ = tls_api
    sink = events_api_sink(PrefectSettings(api_url=url), EmitterSettings())
    with pytest.raises(MisconfiguredSinkError, match="INFRA_OBSERVER_EMITTER_CA_BUNDLE"):
        await sink.check()
    await sink.aclose()


async def test_a_custom_ca_bundle_is_trusted(tls_api: tuple[str, Path]) -> None:
    url, cert = tls_api
    sink = events_api_sink(PrefectSettings(api_url=url), EmitterSettings(ca_bundle=cert))
    assert "accepted" in await sink.check()
    await sink.aclose()
