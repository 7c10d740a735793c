from __future__ import annotations

import re
from pathlib import Path

import pytest

from infra_observer.config import (
    api_url_problem,
    credential_warnings,
    load_settings,
    redact_credentials,
    reference_markdown,
    type_name,
    unknown_variables,
)
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


def test_a_renew_deadline_not_below_the_lease_duration_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INFRA_OBSERVER_LEADER_ELECTION_LEASE_DURATION_SECONDS", "10")
    monkeypatch.setenv("INFRA_OBSERVER_LEADER_ELECTION_RENEW_DEADLINE_SECONDS", "10")
    with pytest.raises(ConfigError, match=r"RENEW_DEADLINE_SECONDS=10\.0 must be below"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("INFRA_OBSERVER_EMITTER_BATCH_MAX_BYTES", "1499999"),
        ("INFRA_OBSERVER_ECS_MAX_MESSAGES", "11"),
        ("INFRA_OBSERVER_ECS_VISIBILITY_TIMEOUT_SECONDS", "4"),
        ("INFRA_OBSERVER_ECS_VISIBILITY_TIMEOUT_SECONDS", "43201"),
        ("INFRA_OBSERVER_KUBERNETES_READ_COALESCE_SECONDS", "-0.1"),
        ("INFRA_OBSERVER_KUBERNETES_READ_COALESCE_SECONDS", "1.5"),
        ("INFRA_OBSERVER_EMITTER_DRAIN_SECONDS", "inf"),
        ("INFRA_OBSERVER_EMITTER_RETRY_MAX_SECONDS", "nan"),
    ],
)
def test_documented_bounds_are_enforced(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=re.escape(f"{variable}='{value}'")):
        load_settings()


def test_the_reference_shows_bounds_and_readable_types() -> None:
    rows = {
        line.split("|")[1].strip(" `"): [cell.strip() for cell in line.split("|")[2:-1]]
        for line in reference_markdown().splitlines()
        if line.startswith("| `")
    }
    assert rows["INFRA_OBSERVER_EMITTER_BATCH_MAX_BYTES"][:2] == ["integer", "≥ 1,500,000"]
    assert rows["INFRA_OBSERVER_ECS_MAX_MESSAGES"][1] == "1 to 10"
    assert rows["INFRA_OBSERVER_ECS_VISIBILITY_TIMEOUT_SECONDS"][1] == "5 to 43,200"
    assert rows["INFRA_OBSERVER_KUBERNETES_READ_COALESCE_SECONDS"][:2] == ["number", "0 to 1"]
    assert rows["INFRA_OBSERVER_LEADER_ELECTION_RENEW_DEADLINE_SECONDS"][1] == (
        "> 0, < `INFRA_OBSERVER_LEADER_ELECTION_LEASE_DURATION_SECONDS`"
    )
    assert rows["INFRA_OBSERVER_EMITTER_CA_BUNDLE"][0] == "path of an existing file (optional)"
    assert rows["INFRA_OBSERVER_EMITTER_SINK"][0] == "`auto`, `events-api` or `stdout`"
    assert rows["INFRA_OBSERVER_KUBERNETES_NAMESPACES"][0] == "comma-separated list of strings"
    assert not any("Optional" in row[0] or "Annotated" in row[0] for row in rows.values())


@pytest.mark.parametrize(
    ("text", "level"),
    [("INFO", "info"), ("Debug", "debug"), ("warn", "warning"), ("WARNING", "warning"),
     (" error ", "error"), ("FATAL", "critical"), ("critical", "critical")],
)  # fmt: skip
def test_log_levels_in_any_case_and_the_usual_aliases(
    monkeypatch: pytest.MonkeyPatch, text: str, level: str
) -> None:
    monkeypatch.setenv("INFRA_OBSERVER_LOG_LEVEL", text)
    assert load_settings().log.level == level


def test_an_unknown_log_level_names_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFRA_OBSERVER_LOG_LEVEL", "loud")
    with pytest.raises(ConfigError, match=r"INFRA_OBSERVER_LOG_LEVEL='loud': .*'warning'"):
        load_settings()


def test_unknown_variables_name_the_closest_known_one() -> None:
    environ = {
        "INFRA_OBSERVER_KUBERNETES_ENABLE": "true",
        "infra_observer_emitter_queue_sise": "5",
        "INFRA_OBSERVER_KUBERNETES_ENABLED": "true",  # known
        "INFRA_OBSERVER_CACHE": "/tmp/cache",  # the test harness's, not the daemon's
        "PREFECT_HOME": "/tmp",  # not ours
    }
    warnings = unknown_variables(environ)
    assert [(w.variable, w.closest) for w in warnings] == [
        ("INFRA_OBSERVER_KUBERNETES_ENABLE", "INFRA_OBSERVER_KUBERNETES_ENABLED"),
        ("infra_observer_emitter_queue_sise", "INFRA_OBSERVER_EMITTER_QUEUE_SIZE"),
    ]
    assert "did you mean INFRA_OBSERVER_KUBERNETES_ENABLED?" in warnings[0].message


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://user:pass@host/api", "http://***@host/api"),
        ("POST https://tok@h:8443/api/events failed", "POST https://***@h:8443/api/events failed"),
        ("PREFECT_API_URL='http://a:b@x/api', http://c:d@y", "PREFECT_API_URL='http://***@x/api', http://***@y"),
        ("http://host/api?user=a@b", "http://host/api?user=a@b"),
        ("mail me: ops@example.com", "mail me: ops@example.com"),
    ],
)  # fmt: skip
def test_credentials_in_urls_are_redacted(text: str, shown: str) -> None:
    assert redact_credentials(text) == shown


def test_a_url_with_credentials_is_redacted_in_configuration_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://admin:hunter2@prefect.internal:99999/api")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "hunter2" not in str(caught.value)
    assert "PREFECT_API_URL='http://***@prefect.internal:99999/api'" in str(caught.value)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"PREFECT_API_KEY": "k"}, [("credential_unused", "PREFECT_API_KEY")]),
        ({"PREFECT_API_AUTH_STRING": "u:p"}, [("credential_unused", "PREFECT_API_AUTH_STRING")]),
        ({"PREFECT_API_URL": "http://prefect.internal/api", "PREFECT_API_KEY": "k"},
         [("credential_in_clear", "PREFECT_API_KEY")]),
        ({"PREFECT_API_URL": "http://u:p@10.0.0.7:4200/api"},
         [("credential_in_clear", "PREFECT_API_URL")]),
        ({"PREFECT_API_URL": "http://127.0.0.1:4200/api", "PREFECT_API_KEY": "k"}, []),
        ({"PREFECT_API_URL": "http://localhost:4200/api", "PREFECT_API_AUTH_STRING": "u:p"}, []),
        ({"PREFECT_API_URL": "http://[::1]:4200/api", "PREFECT_API_KEY": "k"}, []),
        ({"PREFECT_API_URL": "https://prefect.internal/api", "PREFECT_API_KEY": "k"}, []),
        ({"PREFECT_API_URL": "http://prefect.internal/api"}, []),
    ],
)  # fmt: skip
def test_credentials_unused_or_sent_in_clear_are_warned_about(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], expected: list[tuple[str, str]]
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    warnings = credential_warnings(load_settings().prefect)
    assert [(w.event, w.variable) for w in warnings] == expected


@pytest.mark.parametrize(
    ("url", "flagged"),
    [
        ("http://127.0.0.1:4200", True),
        ("http://127.0.0.1:4200/events", True),
        ("http://127.0.0.1:4200/api", False),
        ("http://127.0.0.1:4200/api/", False),
        ("https://proxy.internal/prefect/api", False),
        ("https://api.prefect.cloud/api/accounts/a/workspaces/w", False),
    ],
)
def test_an_api_url_without_api_is_flagged(
    monkeypatch: pytest.MonkeyPatch, url: str, flagged: bool
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", url)
    problem = api_url_problem(load_settings().prefect)
    assert (problem is not None) == flagged
    if problem:
        assert "/api" in problem
        assert url in problem


@pytest.mark.parametrize(
    ("annotation", "name"),
    [
        (bool, "boolean"),
        (int | None, "integer (optional)"),
        (list[str], "comma-separated list of strings"),
    ],
)
def test_type_names_are_words(annotation: object, name: str) -> None:
    assert type_name(annotation) == name
