"""The configuration as a new user meets it: `infra-observer check|run|--version` as processes.

None of these needs a peer: a source that cannot connect retries, and a socket bound here
stands for the busy port or the server that must not be reached.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import orjson
import pytest

from infra_observer import __version__
from tests.integration.test_daemon import BIN, base_env

# A Docker source that cannot connect retries in the background, so the daemon gets as far
# as serving its health port.
UNREACHABLE_DOCKER = {
    "INFRA_OBSERVER_DOCKER_ENABLED": "true",
    "INFRA_OBSERVER_DOCKER_HOST": "unix:///nonexistent/docker.sock",
}


def cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *argv], check=False, env=env, capture_output=True, text=True, timeout=60
    )


def json_logs(stderr: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stderr.splitlines() if line.startswith("{")]


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """A loopback port that is taken, and tells whether anyone connected to it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken.setblocking(False)
        yield taken


def connected(taken: socket.socket) -> bool:
    try:
        taken.accept()[0].close()
    except BlockingIOError:
        return False
    return True


@pytest.mark.parametrize(
    "argv", [[str(BIN), "--version"], [sys.executable, "-m", "infra_observer", "--version"]]
)
def test_version_from_the_script_and_from_python_m(argv: list[str]) -> None:
    result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, f"infra-observer {__version__}\n")


def test_check_fails_without_a_source_and_names_a_misspelled_variable() -> None:
    result = cli("check", env=base_env(INFRA_OBSERVER_KUBERNETES_ENABLE="true"))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "WARN INFRA_OBSERVER_KUBERNETES_ENABLE: not a known variable, ignored; "
        "did you mean INFRA_OBSERVER_KUBERNETES_ENABLED?"
    )
    assert "PASS sink stdout: writing JSON lines to stdout" in lines
    assert any(
        line.startswith("FAIL sources: no source is enabled")
        and "INFRA_OBSERVER_KUBERNETES_ENABLED=true" in line
        for line in lines
    )


def test_run_warns_about_a_misspelled_variable_in_its_logs() -> None:
    env = base_env(INFRA_OBSERVER_KUBERNETES_ENABLE="true", INFRA_OBSERVER_LOG_LEVEL="WARN")
    result = cli("run", env=env)
    assert result.returncode == 2  # no source enabled, as check said
    warnings = [entry for entry in json_logs(result.stderr) if entry["event"] == "unknown_variable"]
    assert len(warnings) == 1, result.stderr
    assert warnings[0]["level"] == "warning"
    assert warnings[0]["variable"] == "INFRA_OBSERVER_KUBERNETES_ENABLE"
    assert warnings[0]["closest"] == "INFRA_OBSERVER_KUBERNETES_ENABLED"


def test_a_busy_health_port_is_a_configuration_error(listening: socket.socket) -> None:
    port = listening.getsockname()[1]
    env = base_env(INFRA_OBSERVER_HEALTH_PORT=str(port), **UNREACHABLE_DOCKER)
    result = cli("run", env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.splitlines()[-1]
    assert f"cannot listen on 127.0.0.1 port {port}" in message
    assert f"INFRA_OBSERVER_HEALTH_PORT={port}" in message


def test_check_flags_an_api_url_without_api_before_any_request(
    listening: socket.socket,
) -> None:
    port = listening.getsockname()[1]
    env = base_env(PREFECT_API_URL=f"http://user:s3cret@127.0.0.1:{port}", **UNREACHABLE_DOCKER)
    result = cli("check", env=env)
    assert result.returncode == 1
    sink = next(line for line in result.stdout.splitlines() if "sink events-api" in line)
    assert sink.startswith(f"FAIL sink events-api: PREFECT_API_URL='http://***@127.0.0.1:{port}/'")
    assert "must end in /api" in sink
    assert not connected(listening)
    assert "s3cret" not in result.stdout + result.stderr


def test_check_redacts_url_credentials_and_warns_when_they_travel_in_clear() -> None:
    env = base_env(
        PREFECT_API_URL="http://user:s3cret@prefect.invalid/api",
        PREFECT_API_KEY="pnu_s3cret",
        **UNREACHABLE_DOCKER,
    )
    result = cli("check", env=env)
    assert result.returncode == 1
    assert "s3cret" not in result.stdout + result.stderr
    assert "WARN PREFECT_API_KEY: sent over plain http:// to prefect.invalid" in result.stdout
    assert "FAIL sink events-api: POST http://***@prefect.invalid/api/events failed" in (
        result.stdout
    )


def test_a_key_without_a_url_is_said_to_be_unused() -> None:
    result = cli("check", env=base_env(PREFECT_API_KEY="pnu_s3cret", **UNREACHABLE_DOCKER))
    assert "WARN PREFECT_API_KEY: set, but PREFECT_API_URL is not" in result.stdout
    assert "PASS sink stdout" in result.stdout
    assert "s3cret" not in result.stdout + result.stderr


URL_PASSWORD = "s3cret-in-url"
API_KEY = "pnu_s3cret-key"
WITH_SECRETS = {
    "PREFECT_API_URL": f"https://user:{URL_PASSWORD}@prefect.example/api",
    "PREFECT_API_KEY": API_KEY,
}


def test_config_shows_each_value_and_its_source_and_hides_secrets() -> None:
    env = base_env(
        **WITH_SECRETS,
        INFRA_OBSERVER_HEALTH_PORT="9191",
        infra_observer_log_level="Warn",
        INFRA_OBSERVER_KUBERNETES_ENABLE="true",
    )
    result = cli("config", "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = {row["variable"]: row for row in orjson.loads(result.stdout)}
    assert rows["PREFECT_API_URL"] == {
        "section": "prefect",
        "variable": "PREFECT_API_URL",
        "value": "https://***@prefect.example/api",
        "source": "environment",
    }
    assert (rows["PREFECT_API_KEY"]["value"], rows["PREFECT_API_KEY"]["source"]) == (
        "***",
        "environment",
    )
    assert rows["PREFECT_API_AUTH_STRING"]["value"] is None
    assert (
        rows["INFRA_OBSERVER_HEALTH_PORT"]["value"],
        rows["INFRA_OBSERVER_HEALTH_PORT"]["source"],
    ) == (9191, "environment")
    assert rows["INFRA_OBSERVER_LOG_LEVEL"]["value"] == "warning"
    assert rows["INFRA_OBSERVER_LOG_LEVEL"]["source"] == "environment (infra_observer_log_level)"
    assert rows["INFRA_OBSERVER_EMITTER_QUEUE_SIZE"]["source"] == "default"
    # The misspelled variable is not a setting: named on stderr, as `check` names it.
    assert "INFRA_OBSERVER_KUBERNETES_ENABLE" not in rows
    assert result.stderr.splitlines() == [
        "WARN INFRA_OBSERVER_KUBERNETES_ENABLE: not a known variable, ignored; "
        "did you mean INFRA_OBSERVER_KUBERNETES_ENABLED?"
    ]
    assert URL_PASSWORD not in result.stdout + result.stderr
    assert API_KEY not in result.stdout + result.stderr


def test_config_changed_is_a_table_of_what_the_environment_sets() -> None:
    env = base_env(**WITH_SECRETS, INFRA_OBSERVER_HEALTH_PORT="9191")
    result = cli("config", "--changed", env=env)
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines == [
        ["SECTION", "VARIABLE", "VALUE", "SOURCE"],
        ["prefect", "PREFECT_API_URL", "https://***@prefect.example/api", "environment"],
        ["prefect", "PREFECT_API_KEY", "***", "environment"],
        ["health", "INFRA_OBSERVER_HEALTH_PORT", "9191", "environment"],
        ["log", "INFRA_OBSERVER_LOG_FORMAT", "json", "environment"],
    ]
    assert URL_PASSWORD not in result.stdout + result.stderr
    assert API_KEY not in result.stdout + result.stderr


def test_config_refuses_an_invalid_configuration_as_run_does() -> None:
    env = base_env(
        INFRA_OBSERVER_HEALTH_PORT="70000",
        PREFECT_API_KEY=API_KEY,
        PREFECT_API_AUTH_STRING="admin:hunter2",
    )
    result = cli("config", "--json", env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("infra-observer: invalid configuration:\n")
    assert "INFRA_OBSERVER_HEALTH_PORT='70000'" in result.stderr
    assert "not both" in result.stderr
    assert API_KEY not in result.stderr
    assert "hunter2" not in result.stderr
    run = cli("run", env=env)
    assert (run.returncode, run.stderr) == (2, result.stderr)
