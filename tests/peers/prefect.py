"""A real Prefect server (from its own cached venv) as the events API peer."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

from ._util import ManagedProcess, OneProcessPeer, free_port, provisioned, short_tempdir

log = logging.getLogger(__name__)

_DROPPING = re.compile(r"dropping \d+ events")

PAGE_LIMIT = 50  # the server refuses larger pages
LOGS_PAGE_LIMIT = 200  # the server's default largest page of logs
BUSY_RETRIES = 25
BUSY_PAUSE_SECONDS = 0.2
TEST_AUTH_STRING = "observer:integration-secret"  # for servers started with basic auth
WIDEST_SINCE = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


class PrefectPeer(OneProcessPeer):
    """``prefect server start`` on a free loopback port with a throwaway PREFECT_HOME.

    Attributes: ``api_url`` (``http://127.0.0.1:<port>/api``), ``auth_string``
    (``user:pass`` when started with basic auth, else None), ``headers`` (auth header
    for clients), ``env()`` (PREFECT_API_URL [+ PREFECT_API_AUTH_STRING]).
    """

    stop_timeout = 20.0

    def __init__(
        self, *, auth_string: str | None = None, extra_env: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(short_tempdir("io-prefect-"))
        self.prefect_binary = provisioned("prefect")
        self.auth_string = auth_string
        self.extra_env = dict(extra_env or {})
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"

    @property
    def headers(self) -> dict[str, str]:
        if not self.auth_string:
            return {}
        encoded = base64.b64encode(self.auth_string.encode()).decode()
        return {"Authorization": f"Basic {encoded}"}

    def env(self) -> dict[str, str]:
        """Client-side environment for a process that should send events here."""
        env = {"PREFECT_API_URL": self.api_url}
        if self.auth_string:
            env["PREFECT_API_AUTH_STRING"] = self.auth_string
        return env

    def start(self, timeout: float = 120) -> PrefectPeer:
        home = self.state_dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        env = {
            # The server's own venv only: the project's venv must not leak into it.
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("PREFECT_", "VIRTUAL_ENV", "PYTHON"))
            },
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            # Stored events become readable within about half a second.
            "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "0.5",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            **self.extra_env,
        }
        if self.auth_string:
            env["PREFECT_SERVER_API_AUTH_STRING"] = self.auth_string
        env["PATH"] = str(Path(self.prefect_binary).parent) + os.pathsep + env.get("PATH", "")
        proc = ManagedProcess(
            "prefect-server",
            [
                self.prefect_binary,
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            log_path=self.state_dir / "prefect.log",
            env=env,
            cwd=self.state_dir,
        )

        def healthy() -> bool | None:
            response = httpx.get(self.api_url + "/health", headers=self.headers, timeout=2)
            return True if response.status_code == 200 else None

        return self._launch(proc, ready=healthy, timeout=timeout, interval=0.5)

    def dropped_batches(self) -> list[str]:
        """The server log's lines saying its event persister gave up a write batch and dropped
        its events (Prefect 3.8.8 with SQLite, on a batch made only of stored ids)."""
        text = (self.state_dir / "prefect.log").read_text(errors="replace")
        return [line for line in text.splitlines() if _DROPPING.search(line)]

    # ------------------------------------------------------------ events API

    def _client(self) -> httpx.AsyncClient:
        # A new client per call: the peer outlives any one test's event loop.
        return httpx.AsyncClient(base_url=self.api_url, headers=self.headers, timeout=30)

    async def post_events(self, events: Iterable[Mapping[str, Any]]) -> httpx.Response:
        """POST a list of events to /events (204 means queued, not yet stored)."""
        async with self._client() as client:
            return await client.post("/events", json=[dict(e) for e in events])

    async def read_events(
        self,
        *,
        ids: Iterable[str] | None = None,
        resource_ids: Iterable[str] | None = None,
        names: Iterable[str] | None = None,
        since: dt.datetime | str | None = None,
        until: dt.datetime | str | None = None,
    ) -> list[dict[str, Any]]:
        """All stored events matching the filters, following ``next_page``.

        The server's own default ``occurred`` window is the last day up to now, which
        would hide events whose source timestamps are older or a little ahead; without
        ``since``/``until`` this reads from 2000-01-01 to a day from now instead.
        """
        event_filter: dict[str, Any] = {}
        if ids is not None:
            event_filter["id"] = {"id": [str(i) for i in ids]}
        if resource_ids is not None:
            event_filter["resource"] = {"id": list(resource_ids)}
        if names is not None:
            event_filter["event"] = {"name": list(names)}
        event_filter["occurred"] = {
            "since": _timestamp(since if since is not None else WIDEST_SINCE),
            "until": _timestamp(
                until if until is not None else dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
            ),
        }
        events: list[dict[str, Any]] = []
        async with self._client() as client:
            response = await client.post(
                "/events/filter", json={"filter": event_filter, "limit": PAGE_LIMIT}
            )
            while True:
                response.raise_for_status()
                page = response.json()
                events.extend(page.get("events", []))
                next_page = page.get("next_page")
                if not next_page:
                    break
                response = await client.get(str(next_page))
        return events

    async def wait_for_events(
        self,
        *,
        expected_count: int,
        timeout: float = 15,  # noqa: ASYNC109 - a bounded poll, the bound is the point
        settle: float = 1.5,
        interval: float = 0.25,
        **filters: Any,
    ) -> list[dict[str, Any]]:
        """Poll ``read_events(**filters)`` until at least ``expected_count`` are stored.

        After reaching the count it keeps polling for ``settle`` seconds, so duplicates or
        extra events show up in the result. Raises AssertionError on timeout.
        """
        deadline = time.monotonic() + timeout
        events: list[dict[str, Any]] = []
        while True:
            events = await self.read_events(**filters)
            if len(events) >= expected_count:
                break
            if time.monotonic() > deadline:
                names = [e.get("event") for e in events]
                raise AssertionError(
                    f"expected {expected_count} events, {len(events)} after {timeout}s: {names}"
                )
            await asyncio.sleep(interval)
        settle_until = time.monotonic() + settle
        while time.monotonic() < settle_until:
            await asyncio.sleep(interval)
            events = await self.read_events(**filters)
        return events

    # ---------------------------------------------------- orchestration and logs

    async def create_flow_run(
        self, *, flow_name: str, state_type: str = "SCHEDULED", state_name: str = "Scheduled"
    ) -> str:
        """A flow (created, or found by name) and a new run of it in the given state; its id."""
        async with self._client() as client:
            flow = await _post(client, "/flows/", body={"name": flow_name})
            state = {"type": state_type, "name": state_name}
            run = await _post(
                client, "/flow_runs/", body={"flow_id": flow.json()["id"], "state": state}
            )
            return str(run.json()["id"])

    async def create_flow_runs(self, count: int, *, flow_name: str) -> list[str]:
        """`count` new Scheduled runs of one flow; their ids."""
        async with self._client() as client:
            flow = await _post(client, "/flows/", body={"name": flow_name})
            body = {"flow_id": flow.json()["id"], "state": {"type": "SCHEDULED"}}
            ids = []
            for _ in range(count):
                run = await _post(client, "/flow_runs/", body=body)
                ids.append(str(run.json()["id"]))
            return ids

    async def force_state(self, flow_run_id: str, *, state_type: str, state_name: str) -> None:
        """Put a run in a state whatever the orchestration rules say (`force: true`)."""
        async with self._client() as client:
            response = await _post(
                client,
                f"/flow_runs/{flow_run_id}/set_state",
                body={"state": {"type": state_type, "name": state_name}, "force": True},
            )
            assert response.json()["status"] == "ACCEPT", response.text

    async def read_flow_run(self, flow_run_id: str) -> dict[str, Any]:
        """`GET /flow_runs/{id}`, as the server answers it."""
        async with self._client() as client:
            response = await client.get(f"/flow_runs/{flow_run_id}")
            response.raise_for_status()
            answer: dict[str, Any] = response.json()
            return answer

    async def read_state(self, flow_run_id: str) -> tuple[str, str]:
        """The run's current state: its type and name."""
        state = (await self.read_flow_run(flow_run_id))["state"]
        return state["type"], state["name"]

    async def read_state_history(self, flow_run_id: str) -> list[tuple[str, str]]:
        """Every state the run has been in, oldest first (`GET /flow_run_states/`)."""
        async with self._client() as client:
            response = await client.get("/flow_run_states/", params={"flow_run_id": flow_run_id})
            response.raise_for_status()
            states = sorted(response.json(), key=lambda state: state["timestamp"])
            return [(state["type"], state["name"]) for state in states]

    async def read_logs(self, flow_run_id: str) -> list[dict[str, Any]]:
        """Every log record of the run, oldest first (`POST /logs/filter`, paged)."""
        records: list[dict[str, Any]] = []
        async with self._client() as client:
            while True:
                response = await _post(
                    client,
                    "/logs/filter",
                    body={
                        "logs": {"flow_run_id": {"any_": [flow_run_id]}},
                        "sort": "TIMESTAMP_ASC",
                        "limit": LOGS_PAGE_LIMIT,
                        "offset": len(records),
                    },
                )
                page: list[dict[str, Any]] = response.json()
                records.extend(page)
                if len(page) < LOGS_PAGE_LIMIT:
                    return records


async def _post(client: httpx.AsyncClient, path: str, *, body: Mapping[str, Any]) -> httpx.Response:
    """POST, again while the server answers 503: what it answers when SQLite is busy with its
    own services' writes (a busy machine makes that frequent)."""
    for _ in range(BUSY_RETRIES):
        response = await client.post(path, json=dict(body))
        if response.status_code != 503:
            break
        await asyncio.sleep(BUSY_PAUSE_SECONDS)
    response.raise_for_status()
    return response


def _timestamp(value: dt.datetime | str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()


def make_event(
    name: str,
    resource_id: str,
    *,
    event_id: str | None = None,
    occurred: dt.datetime | None = None,
    payload: Mapping[str, Any] | None = None,
    resource: Mapping[str, str] | None = None,
    related: Iterable[Mapping[str, str]] = (),
    follows: str | None = None,
) -> dict[str, Any]:
    """A minimal valid event for the Prefect events API."""
    import uuid

    return {
        "id": event_id or str(uuid.uuid4()),
        "occurred": (occurred or dt.datetime.now(dt.UTC)).isoformat(),
        "event": name,
        "resource": {"prefect.resource.id": resource_id, **(resource or {})},
        "related": [dict(r) for r in related],
        "payload": dict(payload or {}),
        "follows": follows,
    }
