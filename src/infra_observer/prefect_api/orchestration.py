"""Flow runs' states through the orchestration API: read them (one or many at once) and
propose a new one, which the server's orchestration rules accept or not."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar
from uuid import UUID

import orjson
import pydantic

from infra_observer.errors import RetryableDeliveryError
from infra_observer.prefect_api.client import PrefectApi
from infra_observer.prefect_api.statuses import raise_for_status

if TYPE_CHECKING:
    from infra_observer.prefect_api.client import Answer

PAGE_IDS = 200
"""Flow-run ids per `/flow_runs/filter` read: the server's default largest page
(`PREFECT_SERVER_API_DEFAULT_LIMIT`)."""


class SetStateStatus(enum.StrEnum):
    """The orchestration's answer to a proposed state."""

    ACCEPT = "ACCEPT"
    """The run is in the proposed state now."""
    REJECT = "REJECT"
    """The server put the run in another state (given in the result) instead."""
    ABORT = "ABORT"
    """The proposal makes no sense for the run (already final, or in that state): no change."""
    WAIT = "WAIT"
    """Propose again after `delay_seconds`."""


class FlowRunState(pydantic.BaseModel):
    """What the daemon reads of a flow run's state; the rest of the answer is ignored."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)

    type: str
    """`SCHEDULED`, `PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, `CANCELLED`, `CRASHED`,
    `PAUSED` or `CANCELLING` (a later server's new type is kept as it is)."""
    name: str | None = None
    """`Scheduled`, `Late`, `InfrastructurePending`, `Running`, ..."""
    message: str | None = None


class _FlowRun(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)

    id: UUID
    state: FlowRunState | None = None


class _Details(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)

    reason: str | None = None
    delay_seconds: float | None = None


class OrchestrationResult(pydantic.BaseModel):
    """The answer to `set_state`: the status, the run's state after it, and why."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)

    status: SetStateStatus
    state: FlowRunState | None = None
    details: _Details = _Details()

    @property
    def reason(self) -> str | None:
        return self.details.reason

    @property
    def delay_seconds(self) -> float | None:
        """For WAIT: when to propose again."""
        return self.details.delay_seconds


_T = TypeVar("_T")
_FLOW_RUNS = pydantic.TypeAdapter(list[_FlowRun])
_FLOW_RUN = pydantic.TypeAdapter(_FlowRun)
_RESULT = pydantic.TypeAdapter(OrchestrationResult)


class Orchestration:
    """The flow-run endpoints. Every call raises a `DeliveryError` subclass when it fails
    (`statuses.py`): a passing one (`RetryableDeliveryError`) is for the caller to retry with
    backoff, refused credentials are a `MisconfiguredSinkError`. An answer that does not read
    as the endpoint's raises `RetryableDeliveryError` naming what was wrong."""

    def __init__(self, api: PrefectApi) -> None:
        self._api = api

    async def read_flow_runs(self, ids: Iterable[UUID]) -> dict[UUID, FlowRunState | None]:
        """The states of the runs among `ids` that exist (one read per `PAGE_IDS` ids); a run
        the server does not have is left out."""
        unique = list(dict.fromkeys(ids))
        states: dict[UUID, FlowRunState | None] = {}
        for start in range(0, len(unique), PAGE_IDS):
            page = [str(run_id) for run_id in unique[start : start + PAGE_IDS]]
            body = {"flow_runs": {"id": {"any_": page}}, "limit": PAGE_IDS}
            response = await self._api.request("POST", "/flow_runs/filter", body=orjson.dumps(body))
            raise_for_status(response, url=self._api.url("/flow_runs/filter"))
            runs = _parse(_FLOW_RUNS, response, what="a list of flow runs")
            states.update((run.id, run.state) for run in runs)
        return states

    async def probe(self) -> str:
        """Read one flow run (`POST /flow_runs/filter`, limit 1): proves that the
        orchestration API answers at this URL with these credentials. Returns the URL read."""
        url = self._api.url("/flow_runs/filter")
        response = await self._api.request("POST", "/flow_runs/filter", body=b'{"limit": 1}')
        raise_for_status(response, url=url)
        _parse(_FLOW_RUNS, response, what="a list of flow runs")
        return url

    async def read_flow_run(self, flow_run_id: UUID) -> FlowRunState | None:
        """The run's state; None when the server has no such run, or it has no state."""
        path = f"/flow_runs/{flow_run_id}"
        response = await self._api.request("GET", path)
        if response.status_code == 404:
            return None
        raise_for_status(response, url=self._api.url(path), method="GET")
        return _parse(_FLOW_RUN, response, what="a flow run").state

    async def set_state(
        self, flow_run_id: UUID, *, type: str, name: str, message: str
    ) -> OrchestrationResult | None:
        """Propose a state (never forced: the server's orchestration rules decide); None when
        the server has no such run (deleted meanwhile)."""
        body = {"state": {"type": type, "name": name, "message": message}, "force": False}
        path = f"/flow_runs/{flow_run_id}/set_state"
        response = await self._api.request("POST", path, body=orjson.dumps(body))
        if response.status_code == 404:
            return None
        raise_for_status(response, url=self._api.url(path))
        return _parse(_RESULT, response, what="an orchestration result")


def _parse(adapter: pydantic.TypeAdapter[_T], response: Answer, *, what: str) -> _T:
    """The answer read as `adapter`'s type, or `RetryableDeliveryError` naming what was
    missing or wrong in it (the first three problems)."""
    try:
        return adapter.validate_json(response.content)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'the body'}: {error['msg']}"
            for error in exc.errors(include_url=False)[:3]
        )
        raise RetryableDeliveryError(
            f"{response.method} {response.url} answered "
            f"{response.status_code} with no {what} ({problems})"
        ) from exc
