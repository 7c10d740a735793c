from __future__ import annotations

from pathlib import Path

import pytest

from infra_observer.config import load_settings, reference_markdown
from infra_observer.errors import ConfigError

DOCS = Path(__file__).parents[2] / "docs" / "configuration.md"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("INFRA_OBSERVER_", "PREFECT_")):
            monkeypatch.delenv(name)


def test_defaults_need_no_configuration() -> None:
    settings = load_settings()
    assert settings.prefect.api_url is None
    assert settings.emitter.sink == "auto"
    assert not settings.kubernetes.enabled


def test_lists_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFRA_OBSERVER_KUBERNETES_NAMESPACES", "team-a, team-b,")
    monkeypatch.setenv("INFRA_OBSERVER_DOCKER_LABEL_FILTERS", "env=prod")
    settings = load_settings()
    assert settings.kubernetes.namespaces == ["team-a", "team-b"]
    assert settings.docker.label_filters == ["env=prod"]


def test_every_mistake_is_one_line_naming_variable_and_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INFRA_OBSERVER_EMITTER_QUEUE_SIZE", "lots")
    monkeypatch.setenv("INFRA_OBSERVER_HEALTH_PORT", "70000")
    monkeypatch.setenv("PREFECT_API_URL", "not a url")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    lines = str(caught.value).splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("PREFECT_API_URL='not a url': ")
    assert any(line.startswith("INFRA_OBSERVER_EMITTER_QUEUE_SIZE='lots': ") for line in lines)
    assert any("INFRA_OBSERVER_HEALTH_PORT='70000'" in line and "65535" in line for line in lines)


def test_secrets_never_appear_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_KEY", "pnu_supersecret")
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "admin:hunter2")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "not both" in message
    assert "supersecret" not in message
    assert "hunter2" not in message


def test_an_enabled_ecs_source_needs_a_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFRA_OBSERVER_ECS_ENABLED", "true")
    with pytest.raises(ConfigError, match="INFRA_OBSERVER_ECS_QUEUE_URL"):
        load_settings()


def test_the_configuration_reference_is_up_to_date() -> None:
    assert DOCS.read_text() == reference_markdown(), (
        "docs/configuration.md is stale: run "
        "`.venv/bin/python -m infra_observer.config > docs/configuration.md`"
    )


def test_a_shard_index_out_of_range_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFRA_OBSERVER_KUBERNETES_SHARD_COUNT", "2")
    monkeypatch.setenv("INFRA_OBSERVER_KUBERNETES_SHARD_INDEX", "2")
    with pytest.raises(ConfigError, match="SHARD_INDEX=2 must be below"):
        load_settings()
