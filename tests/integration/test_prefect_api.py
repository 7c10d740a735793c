"""The Prefect API client against the real Prefect server: flow runs' states read and
proposed, lines written to a run's logs, and failures mapped onto the error tree.

Requests go through `FaultyProxy` (a real HTTP proxy on loopback in front of the server),
which counts them and injects the failures.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar
from uuid import UUID

import orjson
import pytest

from infra_observer.config import PrefectSettings
from infra_observer.errors import (
    MisconfiguredSinkError,
    RetryableDeliveryError,
    UnexpectedStatusError,
)
from infra_observer.prefect_api.client import PrefectApi
from infra_observer.prefect_api.logs import BATCH_BYTES, CUT_MARKER, MAX_LOG_BYTES, Logs
from infra_observer.prefect_api.orchestration import (
    PAGE_IDS,
    FlowRunState,
    Orchestration,
    SetStateStatus,
)
from tests.peers.faulty_proxy import FaultyProxy, Mode, Scripted
from tests.peers.prefect import PrefectPeer

FLOW = "infra-observer-prefect-api"
PENDING = {"type": "PENDING", "name": "InfrastructurePending", "message": "The pod is pending."}
CRASHED = {"type": "CRASHED", "name": "Crashed", "message": "The pod was OOM-killed."}
ERROR = 40
T = TypeVar("T")


async def answered(call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, again while the server answers 503 (SQLite busy with its own services' writes,
    frequent on a busy machine), as the daemon's callers retry a passing failure."""
    for _ in range(20):
        try:
            return await call()
        except RetryableDeliveryError as exc:
            if "answered 503" not in str(exc):
                raise
            await asyncio.sleep(0.2)
    return await call()


@pytest.fixture
async def proxy(prefect: PrefectPeer) -> AsyncIterator[FaultyProxy]:
    started = await FaultyProxy(prefect.api_url).start()
    yield started
    await started.stop()


@pytest.fixture
async def api(proxy: FaultyProxy) -> AsyncIterator[PrefectApi]:
    opened = PrefectApi.from_settings(PrefectSettings(api_url=proxy.api_url), timeout_seconds=30)
    yield opened
    await opened.aclose()


async def test_a_scheduled_run_is_accepted_as_infrastructure_pending(
    prefect: PrefectPeer, api: PrefectApi
) -> None:
    run = await prefect.create_flow_run(flow_name=FLOW)
    orchestration = Orchestration(api)
    scheduled = await answered(lambda: orchestration.read_flow_run(UUID(run)))
    assert scheduled is not None
    assert (scheduled.type, scheduled.name) == ("SCHEDULED", "Scheduled")

    result = await answered(lambda: orchestration.set_state(UUID(run), **PENDING))

    assert result is not None
    assert result.status is SetStateStatus.ACCEPT
    assert result.state == FlowRunState(**PENDING)
    stored = (await prefect.read_flow_run(run))["state"]
    assert (stored["type"], stored["name"], stored["message"]) == tuple(PENDING.values())
    assert await answered(lambda: orchestration.read_flow_run(UUID(run))) == FlowRunState(**PENDING)
    read = await answered(lambda: orchestration.read_flow_runs([UUID(run)]))
    assert read == {UUID(run): FlowRunState(**PENDING)}


async def test_a_running_run_crashes_once_when_two_replicas_propose_it(
    prefect: PrefectPeer, api: PrefectApi
) -> None:
    run = await prefect.create_flow_run(flow_name=FLOW)
    await prefect.force_state(run, state_type="RUNNING", state_name="Running")
    orchestration = Orchestration(api)

    first = await answered(lambda: orchestration.set_state(UUID(run), **CRASHED))
    second = await answered(lambda: orchestration.set_state(UUID(run), **CRASHED))

    assert first is not None
    assert first.status is SetStateStatus.ACCEPT
    assert first.state == FlowRunState(**CRASHED)
    assert second is not None
    assert second.status is SetStateStatus.ABORT
    assert second.reason is not None
    assert "terminal state" in second.reason
    assert (await prefect.read_flow_run(run))["state"]["type"] == "CRASHED"


async def test_a_completed_run_is_not_crashed(prefect: PrefectPeer, api: PrefectApi) -> None:
    run = await prefect.create_flow_run(
        flow_name=FLOW, state_type="COMPLETED", state_name="Completed"
    )
    before = (await prefect.read_flow_run(run))["state"]

    result = await answered(lambda: Orchestration(api).set_state(UUID(run), **CRASHED))

    assert result is not None
    assert result.status is SetStateStatus.ABORT
    after = (await prefect.read_flow_run(run))["state"]
    assert after["id"] == before["id"]
    assert (after["type"], after["name"]) == ("COMPLETED", "Completed")


async def test_runs_are_read_in_bulk_one_request_per_page(
    prefect: PrefectPeer, proxy: FaultyProxy, api: PrefectApi
) -> None:
    runs = [UUID(run) for run in await prefect.create_flow_runs(250, flow_name=FLOW)]
    unknown = uuid.uuid4()

    states = await answered(lambda: Orchestration(api).read_flow_runs([*runs, runs[0], unknown]))

    assert len(proxy.requests_to("POST", "/flow_runs/filter")) == 2 == -(-250 // PAGE_IDS)
    assert set(states) == set(runs)
    assert {(state.type, state.name) for state in states.values() if state} == {
        ("SCHEDULED", "Scheduled")
    }
    assert all(state is not None for state in states.values())


async def test_a_run_the_server_does_not_have(api: PrefectApi) -> None:
    orchestration = Orchestration(api)
    missing = uuid.uuid4()
    assert await answered(lambda: orchestration.read_flow_run(missing)) is None
    assert await answered(lambda: orchestration.set_state(missing, **CRASHED)) is None
    assert await answered(lambda: orchestration.read_flow_runs([missing])) == {}


async def test_lines_are_read_back_in_order_and_a_long_one_is_cut(
    prefect: PrefectPeer, proxy: FaultyProxy, api: PrefectApi
) -> None:
    run = await prefect.create_flow_run(flow_name=FLOW)
    long = "ab\n\u00e9\u20ac" * (MAX_LOG_BYTES // 4)
    lines = ["first line", 'second line, with \u00fcml\u00e4uts and "quotes"', long, "last"]

    logs = Logs(api)
    requests = await answered(
        lambda: logs.write_logs(UUID(run), lines, level=ERROR, name="infra_observer.lifecycle")
    )

    assert requests == len(proxy.requests_to("POST", "/logs/")) == 1
    records = await prefect.read_logs(run)
    assert [record["message"] for record in records][:2] == lines[:2]
    assert records[3]["message"] == "last"
    cut = records[2]["message"]
    assert cut.endswith(CUT_MARKER)
    assert long.startswith(cut.removesuffix(CUT_MARKER))
    assert len(cut) < len(long)
    sent = {key: records[2][key] for key in ("name", "level", "message", "timestamp")}
    assert len(orjson.dumps({**sent, "flow_run_id": run})) <= MAX_LOG_BYTES
    assert {(record["level"], record["name"], record["flow_run_id"]) for record in records} == {
        (ERROR, "infra_observer.lifecycle", run)
    }


async def test_a_batch_over_the_limit_is_split_into_requests(
    prefect: PrefectPeer, proxy: FaultyProxy, api: PrefectApi
) -> None:
    run = await prefect.create_flow_run(flow_name=FLOW)
    lines = [letter * 900_000 for letter in "abcde"]  # 4.5 MB in all

    logs = Logs(api)
    requests = await answered(
        lambda: logs.write_logs(UUID(run), lines, level=30, name="infra_observer")
    )

    posts = proxy.requests_to("POST", "/logs/")
    assert requests == len(posts) == 2
    assert all(seen.size <= BATCH_BYTES for seen in posts)
    assert [record["message"] for record in await prefect.read_logs(run)] == lines


Call = Callable[[PrefectApi], Awaitable[object]]
CALLS: dict[str, Call] = {
    "set_state": lambda api: Orchestration(api).set_state(uuid.uuid4(), **CRASHED),
    "read_flow_run": lambda api: Orchestration(api).read_flow_run(uuid.uuid4()),
    "read_flow_runs": lambda api: Orchestration(api).read_flow_runs([uuid.uuid4()]),
    "write_logs": lambda api: Logs(api).write_logs(uuid.uuid4(), ["x"], level=30, name="x"),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
async def test_a_500_is_a_passing_failure(proxy: FaultyProxy, api: PrefectApi, call: Call) -> None:
    await proxy.set_mode(Mode.ERROR_500)
    with pytest.raises(RetryableDeliveryError, match="answered 500") as raised:
        await call(api)
    assert not isinstance(raised.value, MisconfiguredSinkError | UnexpectedStatusError)


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
async def test_a_401_is_refused_credentials(
    proxy: FaultyProxy, api: PrefectApi, call: Call
) -> None:
    await proxy.set_mode(Mode.UNAUTHORIZED_401)
    with pytest.raises(MisconfiguredSinkError, match="credentials were refused"):
        await call(api)


async def test_an_unexpected_status_is_retried_not_dropped(
    proxy: FaultyProxy, api: PrefectApi
) -> None:
    proxy.answer_next_requests(Scripted(409, b'{"detail": "conflict"}', "application/json"))
    with pytest.raises(UnexpectedStatusError, match="answered 409"):
        await Orchestration(api).set_state(uuid.uuid4(), **CRASHED)


@pytest.mark.parametrize(
    ("call", "answer", "named"),
    [
        (CALLS["read_flow_runs"], b'[{"id": "not-a-uuid"}]', "0.id"),
        (CALLS["set_state"], b'{"status": "MAYBE"}', "status"),
        (CALLS["read_flow_run"], b"<html>maintenance</html>", "a flow run"),
    ],
)
async def test_a_malformed_answer_names_what_was_wrong(
    proxy: FaultyProxy, api: PrefectApi, call: Call, answer: bytes, named: str
) -> None:
    proxy.answer_next_requests(Scripted(200, answer, "application/json"))
    with pytest.raises(RetryableDeliveryError, match=named):
        await call(api)
