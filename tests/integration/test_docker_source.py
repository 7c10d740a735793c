"""The Docker source against the real dockerd of the harness (and a real Prefect server).

Every test labels its containers with a label of its own and gives the source that label as
an extra filter, so tests never see each other's containers on the shared daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import itertools
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from infra_observer.config import DockerSettings, EmitterSettings, PrefectSettings
from infra_observer.emitter import Emitter, Sink, events_api_sink
from infra_observer.errors import SourceError
from infra_observer.events.ids import container_event_id
from infra_observer.events.model import Event
from infra_observer.events.related import slugify
from infra_observer.metrics import Metrics
from infra_observer.sources.docker.stream import DockerSource
from infra_observer.sources.docker.wire import parse_timestamp
from tests.handoff import RecordingHandoff
from tests.integration.source_runner import source_with_emitter
from tests.peers import DockerPeer, PrefectPeer
from tests.peers._util import remove_tree, short_tempdir

EMITTER = EmitterSettings(
    retry_initial_seconds=0.05,
    retry_max_seconds=0.5,
    flush_interval_seconds=0.05,
    request_timeout_seconds=5.0,
)
# Generous: the machine is shared; a wait that ends early is what the tests rely on.
WAIT_SECONDS = 90.0
TEST_LABEL = "io.infra-observer.test"
SLEEP = ["sleep", "300"]
# Doubles a shell variable until the memory limit kills the container.
GREEDY = ["sh", "-c", "x=a; while true; do x=$x$x; done"]


class ListSink:
    """Collects delivered events in order; with `forward`, also sends them on."""

    name = "list"

    def __init__(self, forward: Sink | None = None) -> None:
        self.events: list[Event] = []
        self.forward = forward

    async def send(self, batch: Sequence[Event]) -> None:
        if self.forward is not None:
            await self.forward.send(batch)
        self.events.extend(batch)

    async def check(self) -> str:
        return "list"

    async def aclose(self) -> None:
        if self.forward is not None:
            await self.forward.aclose()

    def of(self, container_id: str) -> list[Event]:
        resource_id = f"prefect.docker.container.{container_id}"
        return [e for e in self.events if e.resource_id == resource_id]

    def names(self, container_id: str) -> list[str]:
        return [e.event.removeprefix("prefect.docker.container.") for e in self.of(container_id)]


@dataclass
class Harness:
    dockerd: DockerPeer
    run_label: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    metrics: Metrics = field(default_factory=lambda: Metrics(CollectorRegistry()))

    def settings(self, **overrides: Any) -> DockerSettings:
        values: dict[str, Any] = {
            "enabled": True,
            "host": self.dockerd.host,
            "label_filters": [f"{TEST_LABEL}={self.run_label}"],
            "backoff_max_seconds": 1.0,
            **overrides,
        }
        return DockerSettings(**values)

    def labels(self, *, form: str = "io.prefect.", **extra: str) -> dict[str, str]:
        """A flow run's labels in the given form (`io.prefect.` or `prefect.io/`)."""
        return {
            f"{form}flow-run-id": str(uuid.uuid4()),
            f"{form}flow-run-name": "amber-owl",
            TEST_LABEL: self.run_label,
            **extra,
        }

    async def run(self, command: list[str], **kwargs: Any) -> str:
        kwargs.setdefault("labels", self.labels())
        return await self.dockerd.run_container(command, **kwargs)

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    async def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            await self.dockerd.remove_labelled(f"{TEST_LABEL}={self.run_label}")


@pytest.fixture
async def harness(dockerd: DockerPeer) -> AsyncIterator[Harness]:
    result = Harness(dockerd)
    yield result
    await result.cleanup()


@contextlib.asynccontextmanager
async def prefect_sink(prefect: PrefectPeer) -> AsyncIterator[ListSink]:
    """Delivers to the real Prefect server and remembers what it delivered, in order."""
    api = events_api_sink(PrefectSettings(api_url=prefect.api_url), EMITTER)
    sink = ListSink(forward=api)
    try:
        yield sink
    finally:
        await sink.aclose()


@contextlib.asynccontextmanager
async def running(
    harness: Harness, sink: Sink, **settings: Any
) -> AsyncIterator[tuple[DockerSource, Emitter]]:
    emitter = Emitter(sink=sink, settings=EMITTER, metrics=harness.metrics)
    source = DockerSource(
        settings=harness.settings(**settings), handoff=emitter, metrics=harness.metrics
    )

    async def listed(task: asyncio.Task[None]) -> None:
        await until(lambda: source.ready or task.done(), "the first listing")

    async with source_with_emitter(source, emitter, drain_seconds=10, started=listed):
        yield source, emitter


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for a condition (a bound on waiting, not an assertion about time)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


def docker_name(dockerd: DockerPeer) -> str:
    name: str = dockerd.request("GET", "/info").json()["Name"]
    return name


def state_ns(info: dict[str, Any], key: str) -> str:
    return str(parse_timestamp(info["State"][key]))


class Lifecycles(NamedTuple):
    """One container per lifecycle, by id."""

    exits: str
    killed: str
    oom: str
    paused: str
    restarted: str


async def _run_lifecycles(harness: Harness, sink: ListSink) -> Lifecycles:
    """Drive each lifecycle through dockerd until the source reported its last change."""
    dockerd = harness.dockerd
    exits = await harness.run(["sh", "-c", "sleep 1; exit 3"], name=f"exits-{harness.run_label}")
    killed = await harness.run(SLEEP)
    oom = await harness.run(GREEDY, memory=8 * 1024 * 1024)
    paused = await harness.run(SLEEP, labels=harness.labels(form="prefect.io/"))
    restarted = await harness.run(SLEEP)

    assert await dockerd.wait_exit(exits) == 3
    await until(lambda: sink.names(killed) == ["created", "running"], "killed running")
    await dockerd.kill(killed)
    assert await dockerd.wait_exit(oom) == 137
    await until(lambda: sink.names(paused) == ["created", "running"], "paused running")
    await dockerd.pause(paused)
    await until(lambda: sink.names(paused)[-1:] == ["paused"], "paused reported")
    await dockerd.unpause(paused)
    await until(lambda: len(sink.names(paused)) == 4, "unpaused reported")
    await dockerd.remove(paused, force=True)
    await until(lambda: sink.names(restarted) == ["created", "running"], "restart target up")
    await dockerd.restart_container(restarted)

    await until(lambda: sink.names(exits) == ["created", "running", "exited"], "exit code")
    await until(lambda: sink.names(killed)[-1:] == ["exited"], "kill")
    await until(lambda: sink.names(oom)[-1:] == ["exited"], "oom")
    await until(lambda: sink.names(paused)[-1:] == ["removing"], "removal")
    await until(lambda: sink.names(restarted).count("running") == 2, "restart")
    return Lifecycles(exits, killed, oom, paused, restarted)


async def _stored_and_chained(
    prefect: PrefectPeer, sink: ListSink, *, containers: Sequence[str], worker: str
) -> dict[str, dict[str, Any]]:
    """Every event sent is stored once, chained by `follows` per container; by id."""
    sent = [e for c in containers for e in sink.of(c)]
    assert len({e.id for e in sent}) == len(sent)
    stored = await prefect.wait_for_events(
        expected_count=len(sent),
        resource_ids=[f"prefect.docker.container.{c}" for c in containers],
    )
    assert sorted(e["id"] for e in stored) == sorted(str(e.id) for e in sent)

    by_id = {e["id"]: e for e in stored}
    for container_id in containers:
        chain = [by_id[str(e.id)] for e in sink.of(container_id)]
        assert chain[0]["follows"] is None
        for before, after in itertools.pairwise(chain):
            assert after["follows"] == before["id"]
        for event in chain:
            assert event["resource"]["prefect.resource.id"] == (
                f"prefect.docker.container.{container_id}"
            )
            roles = {r["prefect.resource.role"]: r for r in event["related"]}
            assert set(roles) == {"flow-run", "worker"}
            assert roles["worker"]["prefect.resource.id"] == worker
            assert roles["worker"]["prefect.worker-type"] == "docker"
            assert event["payload"] == {}
    return by_id


async def test_lifecycles_reach_prefect(harness: Harness, prefect: PrefectPeer) -> None:
    dockerd = harness.dockerd
    async with prefect_sink(prefect) as sink, running(harness, sink):
        run = await _run_lifecycles(harness, sink)

    assert sink.names(run.killed) == ["created", "running", "exited"]
    assert sink.names(run.oom) == ["created", "running", "exited"]
    assert sink.names(run.paused) == [
        "created",
        "running",
        "paused",
        "running",
        "exited",
        "removing",
    ]
    # Whether the exit reads as `exited` or `restarting` depends on when it was inspected
    # (before or after `docker restart` brought it back): either is the truth at that time.
    restart_names = sink.names(run.restarted)
    assert restart_names[:2] == ["created", "running"]
    assert restart_names[2] in ("exited", "restarting")
    assert restart_names[3:] == ["running"]

    exits_info = await dockerd.inspect(run.exits)
    assert exits_info["State"]["ExitCode"] == 3
    assert [e.id for e in sink.of(run.exits)][2] == container_event_id(
        container_id=run.exits,
        status="exited",
        state_marks={"finished_at": state_ns(exits_info, "FinishedAt")},
    )
    # Nobody else signals it: 137 is the kernel's OOM kill. (State.OOMKilled is not checked:
    # this dockerd sometimes records the exit before the OOM notification.)
    assert (await dockerd.inspect(run.oom))["State"]["ExitCode"] == 137

    worker = f"prefect.worker.docker.{slugify(docker_name(dockerd))}"
    by_id = await _stored_and_chained(prefect, sink, containers=list(run), worker=worker)
    first = by_id[str(sink.of(run.exits)[0].id)]
    assert first["resource"]["prefect.resource.name"] == f"exits-{harness.run_label}"
    flow_run = by_id[str(sink.of(run.paused)[0].id)]["related"][0]
    assert flow_run["prefect.resource.role"] == "flow-run"
    assert flow_run["prefect.resource.name"] == "amber-owl"


async def test_unlabelled_and_filtered_containers_are_ignored(harness: Harness) -> None:
    sink = ListSink()
    async with running(harness, sink, worker_name="Edge Host"):
        unlabelled = await harness.run(SLEEP, labels={TEST_LABEL: harness.run_label})
        other_filter = await harness.run(
            SLEEP, labels={**harness.labels(), TEST_LABEL: "someone-else"}
        )
        watched = await harness.run(
            ["true"], labels=harness.labels(**{"io.prefect.worker-name": "Worker 7"})
        )
        plain = await harness.run(["true"])
        # Both label forms: listed and streamed twice by the daemon, reported once.
        twin = await harness.run(
            ["true"], labels={**harness.labels(), **harness.labels(form="prefect.io/")}
        )
        await until(lambda: sink.names(watched)[-1:] == ["exited"], "the watched container")
        await until(lambda: sink.names(plain)[-1:] == ["exited"], "the plain container")
        await until(lambda: sink.names(twin)[-1:] == ["exited"], "the twin container")
        for container_id in (unlabelled, other_filter):
            await harness.dockerd.kill(container_id)
            await harness.dockerd.wait_exit(container_id)
        # A last event after those exits: once it is in, theirs would have been too.
        marker = await harness.run(["true"])
        await until(lambda: sink.names(marker)[-1:] == ["exited"], "the marker")

    seen = {e.resource_id.rsplit(".", 1)[-1] for e in sink.events}
    assert seen == {watched, plain, twin, marker}
    assert sink.names(twin) == ["created", "running", "exited"]
    workers = {
        c: {r["prefect.resource.id"] for e in sink.of(c) for r in e.related if "worker" in str(r)}
        for c in (watched, plain)
    }
    assert workers == {
        watched: {"prefect.worker.docker.worker-7"},
        plain: {"prefect.worker.docker.edge-host"},
    }


async def test_existing_containers_are_listed_with_the_streamed_ids(harness: Harness) -> None:
    dockerd = harness.dockerd
    done = await harness.run(["sh", "-c", "exit 2"])
    await dockerd.wait_exit(done)
    up = await harness.run(SLEEP)
    created = await dockerd.create_container(SLEEP, labels=harness.labels())
    done_info, up_info = await dockerd.inspect(done), await dockerd.wait_status(up, "running")

    sink = ListSink()
    with capture_logs() as logs:
        async with running(harness, sink) as (source, _):
            assert source.ready
            assert harness.sample("infra_observer_source_ready", source="docker") == 1
            await until(lambda: len(sink.events) == 3, "the listed containers delivered")
    assert sink.names(done) == ["exited"]
    assert sink.names(up) == ["running"]
    assert sink.names(created) == ["created"]
    # The ids a watcher that saw these containers live would have sent: so a restarted
    # observer (or a second replica) is deduplicated by the server.
    assert sink.of(done)[0].id == container_event_id(
        container_id=done,
        status="exited",
        state_marks={"finished_at": state_ns(done_info, "FinishedAt")},
    )
    assert sink.of(up)[0].id == container_event_id(
        container_id=up,
        status="running",
        state_marks={"started_at": state_ns(up_info, "StartedAt")},
    )
    assert any(log["event"] == "docker_synced" and log["first"] for log in logs)


async def test_a_paused_container_keeps_its_id_across_observer_restarts(harness: Harness) -> None:
    """Docker dates no pause: a listed pause must still get the id its streamed event had."""
    dockerd = harness.dockerd
    before = await harness.run(SLEEP)
    await dockerd.pause(before)
    await dockerd.wait_status(before, "paused")
    first = ListSink()
    async with running(harness, first):
        during = await harness.run(SLEEP)
        await until(lambda: first.names(during) == ["created", "running"], "running")
        await dockerd.pause(during)
        await until(lambda: first.names(during)[-1:] == ["paused"], "the streamed pause")
        await until(lambda: first.names(before) == ["paused"], "the listed pause")
    # Two more starts, each listing both containers afresh, at later daemon times.
    listings = [await _listed(harness, count=2), await _listed(harness, count=2)]
    for container_id in (before, during):
        pause_ids = {first.of(container_id)[-1].id}
        pause_ids |= {listed.of(container_id)[0].id for listed in listings}
        assert [listed.names(container_id) for listed in listings] == [["paused"], ["paused"]]
        assert len(pause_ids) == 1, container_id


async def _listed(harness: Harness, *, count: int) -> ListSink:
    """What a fresh source reports of the existing containers on its first listing."""
    sink = ListSink()
    async with running(harness, sink):
        await until(lambda: len(sink.events) == count, "the listing delivered")
    return sink


def skipped(harness: Harness, reason: str) -> float:
    return harness.sample("infra_observer_objects_skipped_total", source="docker", reason=reason)


async def test_containers_with_an_unusable_flow_run_id_are_skipped_and_reported_once(
    harness: Harness,
) -> None:
    dockerd = harness.dockerd
    listed = await harness.run(["true"], labels=harness.labels(**{"io.prefect.flow-run-id": ""}))
    await dockerd.wait_exit(listed)
    sink = ListSink()
    with capture_logs() as logs:
        async with running(harness, sink):
            bad_labels = harness.labels(form="prefect.io/", **{"prefect.io/flow-run-id": "run-9"})
            streamed = await harness.run(["true"], labels=bad_labels)
            await dockerd.wait_exit(streamed)
            for container_id in (listed, streamed):
                await dockerd.remove(container_id)
            # One stream, in order: once the marker's exit is in, so is all of the above.
            marker = await harness.run(["true"])
            await until(lambda: sink.names(marker)[-1:] == ["exited"], "the marker")
    assert {e.resource_id for e in sink.events} == {f"prefect.docker.container.{marker}"}
    assert skipped(harness, "flow_run_id_empty") == 1
    assert skipped(harness, "flow_run_id_not_uuid") == 1
    reports = [e for e in logs if e["event"] == "object_skipped"]
    assert sorted((e["object"], e["reason"]) for e in reports) == sorted(
        [(listed, "flow_run_id_empty"), (streamed, "flow_run_id_not_uuid")]
    )
    assert any("'run-9' is not a UUID" in e["detail"] for e in reports)
    assert not [e for e in logs if e["event"] == "input_error"]


async def test_readiness_is_0_while_dockerd_is_unreachable_and_1_once_listed(
    harness: Harness,
) -> None:
    # A socket path that does not exist yet; later a link to the real daemon's socket.
    link = short_tempdir("io-rdy-") / "docker.sock"
    source = DockerSource(
        settings=harness.settings(host=f"unix://{link}", backoff_max_seconds=0.2),
        handoff=RecordingHandoff(accepts=False),
        metrics=harness.metrics,
    )
    registry, ready = harness.metrics.registry, {"source": "docker"}
    task = asyncio.create_task(source.run())
    try:
        await asyncio.sleep(0)
        assert registry.get_sample_value("infra_observer_source_ready", ready) == 0
        unavailable = {"source": "docker", "reason": "unavailable"}
        await until(
            lambda: harness.sample("infra_observer_source_reconnects_total", **unavailable) >= 2,
            "failed attempts",
        )
        assert registry.get_sample_value("infra_observer_source_ready", ready) == 0
        assert not source.ready
        link.symlink_to(harness.dockerd.socket)
        await until(lambda: source.ready, "ready once the daemon answers")
        assert registry.get_sample_value("infra_observer_source_ready", ready) == 1
        seen = await _readiness_across_a_daemon_restart(harness, source)
        assert 0 in seen
        assert seen[-1] == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        remove_tree(link.parent)


async def _readiness_across_a_daemon_restart(harness: Harness, source: DockerSource) -> list[float]:
    """The gauge's values while dockerd restarts, until the source is listed again."""
    seen: list[float] = []
    restart = asyncio.create_task(asyncio.to_thread(harness.dockerd.restart))
    while not restart.done() or not source.ready:
        value = harness.metrics.registry.get_sample_value(
            "infra_observer_source_ready", {"source": "docker"}
        )
        if value is not None and seen[-1:] != [value]:
            seen.append(value)
        await asyncio.sleep(0.02)
    await restart
    seen.append(1 if source.ready else 0)
    return seen


async def test_daemon_restart_resumes_without_duplicates(
    harness: Harness, prefect: PrefectPeer
) -> None:
    dockerd = harness.dockerd
    async with prefect_sink(prefect) as sink, running(harness, sink):
        finished = await harness.run(["sh", "-c", "exit 1"])
        alive = await harness.run(SLEEP)
        await until(lambda: sink.names(finished)[-1:] == ["exited"], "the finished container")
        await until(lambda: sink.names(alive) == ["created", "running"], "the live container")

        with capture_logs() as logs:
            # Stopping dockerd stops its containers: `alive` exits while the stream is down
            # (or just before), and the listing after the restart must report that once.
            await asyncio.to_thread(dockerd.restart)
            await until(lambda: sink.names(alive)[-1:] == ["exited"], "the exit across restart")
            await until(
                lambda: any(log["event"] == "docker_synced" for log in logs), "the new listing"
            )
            # Following the new stream: this container's every change must arrive.
            after = await harness.run(["sh", "-c", "exit 5"])
            await until(lambda: sink.names(after)[-1:] == ["exited"], "events after the restart")
        assert (
            harness.sample(
                "infra_observer_source_reconnects_total", source="docker", reason="stream_ended"
            )
            + harness.sample(
                "infra_observer_source_reconnects_total", source="docker", reason="unavailable"
            )
            >= 1
        )
        assert any(log["event"] == "docker_reconnecting" for log in logs)

    assert sink.names(finished) == ["created", "running", "exited"]
    assert sink.names(alive) == ["created", "running", "exited"]
    assert sink.names(after) == ["created", "running", "exited"]
    containers = [finished, alive, after]
    sent = [e for c in containers for e in sink.of(c)]
    stored = await prefect.wait_for_events(
        expected_count=len(sent),
        resource_ids=[f"prefect.docker.container.{c}" for c in containers],
    )
    assert sorted(e["id"] for e in stored) == sorted(str(e.id) for e in sent)
    assert len(stored) == 9


async def test_check_reports_the_daemon_or_the_fix(harness: Harness) -> None:
    source = DockerSource(
        settings=harness.settings(),
        handoff=RecordingHandoff(accepts=False),
        metrics=harness.metrics,
    )
    answer = await source.check()
    assert "API 1.41" in answer
    assert harness.dockerd.host in answer

    broken = DockerSource(
        settings=harness.settings(host="unix:///nonexistent/docker.sock"),
        handoff=RecordingHandoff(accepts=False),
        metrics=harness.metrics,
    )
    with pytest.raises(SourceError, match="DOCKER_HOST"):
        await broken.check()


async def test_environment_variables_name_the_daemon(harness: Harness) -> None:
    source = DockerSource(
        settings=harness.settings(host=None),
        handoff=RecordingHandoff(accepts=False),
        metrics=harness.metrics,
        environ={"DOCKER_HOST": harness.dockerd.host},
    )
    assert "API 1.41" in await source.check()


# --- TCP with TLS and client certificates -------------------------------------------------


def _write_certs(directory: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as Docker names them."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue(
        "test ca", ca_key, issuer=None, extensions=[x509.BasicConstraints(ca=True, path_length=0)]
    )
    ca_issuer = (ca.subject, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _issue(
        "127.0.0.1",
        server_key,
        issuer=ca_issuer,
        extensions=[
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
        ],
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _issue(
        "observer",
        client_key,
        issuer=ca_issuer,
        extensions=[x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])],
    )
    _save(directory, "ca", key=ca_key, cert=ca)
    _save(directory, "server", key=server_key, cert=server)
    _save(directory, "cert", key=client_key, cert=client)
    (directory / "cert-key.pem").rename(directory / "key.pem")


def _issue(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    extensions: list[x509.ExtensionType],
) -> x509.Certificate:
    """A certificate for `name`, valid for a day, signed by `issuer` (None: by itself)."""
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, signing_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _save(
    directory: Path, stem: str, *, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> None:
    """`<stem>.pem` and `<stem>-key.pem` in `directory`."""
    (directory / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{stem}-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@contextlib.asynccontextmanager
async def tls_front(dockerd: DockerPeer, certs: Path) -> AsyncIterator[str]:
    """dockerd's API on loopback TCP behind TLS that requires a client certificate.

    The daemon itself stays on its unix socket (it is shared by every test); this front
    terminates TLS as `dockerd --tlsverify` would and passes the bytes through.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs / "ca.pem"))
    context.load_cert_chain(str(certs / "server.pem"), str(certs / "server-key.pem"))
    context.verify_mode = ssl.CERT_REQUIRED

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        daemon_reader, daemon_writer = await asyncio.open_unix_connection(str(dockerd.socket))
        await asyncio.gather(pipe(reader, daemon_writer), pipe(daemon_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"tcp://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def test_tcp_with_tls_client_certificates(harness: Harness, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    _write_certs(certs)
    async with tls_front(harness.dockerd, certs) as host:
        environ = {"DOCKER_HOST": host, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(certs)}
        checked = DockerSource(
            settings=harness.settings(host=None),
            handoff=RecordingHandoff(accepts=False),
            metrics=harness.metrics,
            environ=environ,
        )
        assert "API 1.41" in await checked.check()

        # A client certificate the daemon's CA did not sign is refused in the handshake.
        stranger = tmp_path / "stranger"
        stranger.mkdir()
        _write_certs(stranger)
        (stranger / "ca.pem").write_bytes((certs / "ca.pem").read_bytes())
        refused = DockerSource(
            settings=harness.settings(host=None, cert_path=stranger),
            handoff=RecordingHandoff(accepts=False),
            metrics=harness.metrics,
            environ=environ,
        )
        with pytest.raises(SourceError, match="cannot reach the Docker daemon"):
            await refused.check()

        sink = ListSink()
        emitter = Emitter(sink=sink, settings=EMITTER, metrics=harness.metrics)
        source = DockerSource(
            settings=harness.settings(host=None),
            handoff=emitter,
            metrics=harness.metrics,
            environ=environ,
        )
        emitter_task = asyncio.create_task(emitter.run(), name="emitter")
        source_task = asyncio.create_task(source.run(), name="source")
        try:
            await until(lambda: source.ready or source_task.done(), "the first listing")
            container = await harness.run(["sh", "-c", "exit 4"])
            await until(lambda: sink.names(container)[-1:] == ["exited"], "events over TLS")
            assert not source_task.done()
        finally:
            source_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await source_task
            emitter.stop(5)
            await emitter_task
    assert sink.names(container) == ["created", "running", "exited"]
