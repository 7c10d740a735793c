"""The Docker client's pure part (version negotiation) and its calls over httpx's MockTransport."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from infra_observer.sources.docker.client import (
    DockerApiError,
    DockerClient,
    DockerUnavailableError,
    negotiate_version,
)
from infra_observer.sources.docker.endpoint import Endpoint


@pytest.mark.parametrize(
    ("daemon", "chosen"),
    [
        ({"ApiVersion": "1.41", "MinAPIVersion": "1.12"}, "1.41"),
        ({"ApiVersion": "1.52", "MinAPIVersion": "1.44"}, "1.47"),
        ({"ApiVersion": "1.9", "MinAPIVersion": "1.9"}, None),
        ({"ApiVersion": "1.51", "MinAPIVersion": "1.48"}, None),
        ({"ApiVersion": "1.30"}, "1.30"),
        ({}, None),
    ],
)
def test_version_negotiation(daemon: dict[str, str], chosen: str | None) -> None:
    if chosen is None:
        with pytest.raises(DockerApiError):
            negotiate_version(daemon)
    else:
        assert negotiate_version(daemon) == chosen


def client_for(handler: Any) -> DockerClient:
    return DockerClient(
        endpoint=Endpoint(host="unix:///test.sock", base_url="http://docker"),
        transport=httpx.MockTransport(handler),
    )


async def test_calls_use_the_negotiated_version_and_label_filters() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/version":
            return httpx.Response(200, json={"ApiVersion": "1.41", "Version": "20.10"})
        if request.url.path == "/v1.41/containers/json":
            return httpx.Response(200, json=[{"Id": "abc"}, "junk"])
        if request.url.path == "/v1.41/containers/gone/json":
            return httpx.Response(404, json={"message": "No such container: gone"})
        return httpx.Response(500, json={"message": "boom"})

    async with client_for(handler) as client:
        await client.version()
        assert client.api_version == "1.41"
        listed = await client.list_containers(labels=["io.prefect.flow-run-id", "team=a"])
        assert listed == [{"Id": "abc"}]
        assert await client.inspect("gone") is None
        with pytest.raises(DockerApiError, match="500 to /info: boom") as failed:
            await client.info()
    assert failed.value.status == 500
    query = seen[1].url.params
    assert query["all"] == "true"
    assert json.loads(query["filters"]) == {"label": ["io.prefect.flow-run-id", "team=a"]}


async def test_calls_before_negotiation_are_a_bug() -> None:
    async with client_for(lambda request: httpx.Response(200, json={})) as client:
        with pytest.raises(RuntimeError, match="version"):
            await client.info()


async def test_events_stream_yields_lines_as_they_come() -> None:
    lines = [json.dumps({"Action": "start", "n": n}) for n in range(3)]

    async def body() -> Any:
        # Split mid-line: lines must be reassembled across chunks.
        text = "\n".join(lines) + "\n\n"
        for start in range(0, len(text), 7):
            yield text[start : start + 7].encode()

    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.url.path == "/version":
            return httpx.Response(200, json={"ApiVersion": "1.41"})
        return httpx.Response(200, content=body())

    async with client_for(handler) as client:
        await client.version()
        async with client.events(labels=["prefect.io/flow-run-id"], since=1_500_000_000_5) as it:
            received = [line async for line in it]
    assert received == lines
    query = requests[1].url.params
    assert json.loads(query["filters"]) == {
        "type": ["container"],
        "label": ["prefect.io/flow-run-id"],
    }
    assert query["since"] == "15.000000005"


async def test_transport_errors_become_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 2] No such file or directory", request=request)

    async with client_for(handler) as client:
        with pytest.raises(DockerUnavailableError, match=r"unix:///test.sock.*DOCKER_HOST"):
            await client.ping()
        client.api_version = "1.41"
        with pytest.raises(DockerUnavailableError):
            async with client.events(labels=["x"]):
                pass


async def test_events_refused_is_an_api_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"message": "invalid filter 'label'"})

    async with client_for(handler) as client:
        client.api_version = "1.41"
        with pytest.raises(DockerApiError, match="invalid filter"):
            async with client.events(labels=["x"]):
                pass
