"""Real flow runs for the benchmark's pods, and the orchestration-API calls made for them.

Without flow runs the pods carry random ids that no Prefect server knows, so an observer's
reads find nothing and its proposals go nowhere. `create` makes the runs on the Prefect
server directly (not through the recording sink, so that the sink counts the observers'
calls only), one `POST /flow_runs/` per run, several at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx

CONCURRENCY = 4
BUSY_RETRIES = 240
BUSY_PAUSE_SECONDS = 0.25
FILTER_PAGE = 200
TIMEOUT_SECONDS = 60
FLOW_NAME = "bench-lifecycle"
QUIET_SECONDS = 5.0
"""Calls stopped: while there is work, proposals follow each other closely, and the
lifecycle's first retries after a failed call come sooner than this."""

# The sink's route keys (`benchmarks._sink._route`) of the orchestration and logs API.
FILTER_IDS = "ids in POST /api/flow_runs/filter"
ROUTES: tuple[tuple[str, str], ...] = (
    # (short name, the sink's key)
    ("flow_runs_filter", "POST /api/flow_runs/filter"),
    ("flow_run_ids_filtered", FILTER_IDS),
    ("flow_run_get", "GET /api/flow_runs/{id}"),
    ("set_state", "POST /api/flow_runs/{id}/set_state"),
    ("logs", "POST /api/logs/"),
    ("events_filter", "POST /api/events/filter"),
)
STATE_NAMES = {"SCHEDULED": "Scheduled", "RUNNING": "Running", "PENDING": "Pending"}


async def _post(session: httpx.AsyncClient, url: str, body: Any) -> Any:
    """POST, again while the server answers 503 (SQLite busy with its own services) or drops
    the connection (a busy server closes idle keep-alive connections as they are reused). A
    repeated create may leave one more run on the server than asked for: only the ids
    returned are used."""
    for _ in range(BUSY_RETRIES):
        try:
            answer = await session.post(url, json=body)
        except httpx.TransportError:
            await asyncio.sleep(BUSY_PAUSE_SECONDS)
            continue
        if answer.status_code == 503:
            await asyncio.sleep(BUSY_PAUSE_SECONDS)
            continue
        answer.raise_for_status()
        return answer.json()
    raise RuntimeError(f"POST {url}: the server stayed busy")


def _client() -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=CONCURRENCY)
    return httpx.AsyncClient(limits=limits, timeout=TIMEOUT_SECONDS)


async def create(api_url: str, count: int, *, state_type: str) -> list[str]:
    """`count` new runs of one flow in `state_type` (SCHEDULED, RUNNING…); their ids."""
    state = {"type": state_type, "name": STATE_NAMES.get(state_type, state_type.title())}
    limit = asyncio.Semaphore(CONCURRENCY)
    async with _client() as session:
        flow = await _post(session, f"{api_url}/flows/", {"name": FLOW_NAME})
        body = {"flow_id": flow["id"], "state": state}

        async def one() -> str:
            async with limit:
                run = await _post(session, f"{api_url}/flow_runs/", body)
                return str(run["id"])

        return list(await asyncio.gather(*(one() for _ in range(count))))


async def reset(api_url: str, ids: Sequence[str], *, state_type: str) -> None:
    """Force the runs back into `state_type`, so that the next observer finds them as the
    first one did (`force: true`: whatever the orchestration rules say)."""
    state = {"type": state_type, "name": STATE_NAMES.get(state_type, state_type.title())}
    limit = asyncio.Semaphore(CONCURRENCY)
    async with _client() as session:

        async def one(flow_run_id: str) -> None:
            async with limit:
                url = f"{api_url}/flow_runs/{flow_run_id}/set_state"
                await _post(session, url, {"state": state, "force": True})

        await asyncio.gather(*(one(flow_run_id) for flow_run_id in ids))


async def state_names(api_url: str, ids: Sequence[str]) -> dict[str, int]:
    """How many of the runs are in each state name now (read in pages, not through the sink)."""
    names: Counter[str] = Counter()
    async with _client() as session:
        for start in range(0, len(ids), FILTER_PAGE):
            page = list(ids[start : start + FILTER_PAGE])
            body = {"flow_runs": {"id": {"any_": page}}, "limit": len(page)}
            runs = await _post(session, f"{api_url}/flow_runs/filter", body)
            names.update(str((run.get("state") or {}).get("name")) for run in runs)
    return dict(names)


async def calls_stopped(
    read: Callable[[], Awaitable[dict[str, int]]], *, poll: float, limit: float
) -> float:
    """Wait until the counts `read` returns for `ROUTES` stay the same for
    `QUIET_SECONDS` (or `limit` passes); the seconds from the start to their last change."""
    began = last_change = time.monotonic()
    counts = await read()
    while time.monotonic() - last_change < QUIET_SECONDS and time.monotonic() - began < limit:
        await asyncio.sleep(poll)
        now = await read()
        if any(now.get(key) != counts.get(key) for _, key in ROUTES):
            counts, last_change = now, time.monotonic()
    return last_change - began


def calls(before: dict[str, int], after: dict[str, int], *, flow_runs: int) -> dict[str, Any]:
    """The orchestration-API calls between two readings of the sink's counts: in total and
    per flow run (None when there were no flow runs to divide by)."""
    total = {name: after.get(key, 0) - before.get(key, 0) for name, key in ROUTES}
    per_run = {name: (n / flow_runs if flow_runs else None) for name, n in total.items()}
    return {"flow_runs": flow_runs, "total": total, "per_flow_run": per_run}


__all__ = ["ROUTES", "calls", "calls_stopped", "create", "reset", "state_names"]
