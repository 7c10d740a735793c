"""`infra-observer config`'s rows: an environment in, each setting's value and source out."""

from __future__ import annotations

import os

import orjson
import pytest
from pydantic_settings import BaseSettings

from infra_observer.commands import show_config
from infra_observer.commands.show_config import Row
from infra_observer.config import (
    SECTIONS,
    EcsSettings,
    PrefectSettings,
    is_secret,
    known_variables,
    load_settings,
)

URL_PASSWORD = "s3cret-in-url"
API_KEY = "pnu_s3cret-key"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(("INFRA_OBSERVER_", "PREFECT_")):
            monkeypatch.delenv(name)


def rows_for(environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Row]:
    """The rows of the settings loaded from `environ`, by variable."""
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    found = show_config.rows(load_settings(), environ)
    return {row.variable: row for row in found}


def test_every_setting_has_a_row_in_the_reference_order() -> None:
    found = show_config.rows(load_settings(), {})
    assert [row.variable for row in found] == known_variables()
    assert {row.source for row in found} == {"default"}
    by_variable = {row.variable: row for row in found}
    assert by_variable["INFRA_OBSERVER_EMITTER_QUEUE_SIZE"] == Row(
        section="emitter",
        variable="INFRA_OBSERVER_EMITTER_QUEUE_SIZE",
        value=10_000,
        source="default",
    )
    assert by_variable["INFRA_OBSERVER_LEADER_ELECTION_ENABLED"].section == "leader_election"
    assert by_variable["INFRA_OBSERVER_DOCKER_HOST"].value is None
    assert by_variable["INFRA_OBSERVER_ECS_TAG_FILTERS"].value == []


@pytest.mark.parametrize(
    ("environ", "variable", "value", "source"),
    [
        ({"INFRA_OBSERVER_HEALTH_PORT": "9090"}, "INFRA_OBSERVER_HEALTH_PORT", 9090, "environment"),
        # The effective value, as the daemon uses it, not the text that was set.
        (
            {"INFRA_OBSERVER_LOG_LEVEL": "WARN"},
            "INFRA_OBSERVER_LOG_LEVEL",
            "warning",
            "environment",
        ),
        (
            {"infra_observer_health_port": "9090"},
            "INFRA_OBSERVER_HEALTH_PORT",
            9090,
            "environment (infra_observer_health_port)",
        ),
        (
            {"INFRA_OBSERVER_KUBERNETES_NAMESPACES": "team-a, team-b,"},
            "INFRA_OBSERVER_KUBERNETES_NAMESPACES",
            ["team-a", "team-b"],
            "environment",
        ),
        (
            {"INFRA_OBSERVER_KUBERNETES_LABEL_SELECTOR": ""},
            "INFRA_OBSERVER_KUBERNETES_LABEL_SELECTOR",
            "",
            "environment",
        ),
        # Set to its default is still set: the environment decides it.
        (
            {"INFRA_OBSERVER_ECS_ENABLED": "false"},
            "INFRA_OBSERVER_ECS_ENABLED",
            False,
            "environment",
        ),
        (
            {"INFRA_OBSERVER_EMITTER_DRAIN_SECONDS": "2.5"},
            "INFRA_OBSERVER_EMITTER_DRAIN_SECONDS",
            2.5,
            "environment",
        ),
        (
            {"PREFECT_API_URL": "http://127.0.0.1:4200/api"},
            "PREFECT_API_URL",
            "http://127.0.0.1:4200/api",
            "environment",
        ),
    ],
)
def test_values_and_sources_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
    environ: dict[str, str],
    variable: str,
    value: object,
    source: str,
) -> None:
    found = rows_for(environ, monkeypatch)
    assert (found[variable].value, found[variable].source) == (value, source)
    others = {row.source for name, row in found.items() if name != variable}
    assert others == {"default"}


def test_secrets_and_url_credentials_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {
        "PREFECT_API_URL": f"https://user:{URL_PASSWORD}@prefect.example/api",
        "PREFECT_API_KEY": API_KEY,
        "INFRA_OBSERVER_ECS_ENDPOINT_URL": f"http://id:{URL_PASSWORD}@127.0.0.1:5000",
    }
    found = rows_for(environ, monkeypatch)
    assert found["PREFECT_API_KEY"].value == "***"
    assert found["PREFECT_API_URL"].value == "https://***@prefect.example/api"
    assert found["INFRA_OBSERVER_ECS_ENDPOINT_URL"].value == "http://***@127.0.0.1:5000"
    # Unset, a secret says so: `***` would claim there is one.
    assert found["PREFECT_API_AUTH_STRING"].value is None
    printed = show_config.as_table(found.values()) + show_config.as_json(found.values())
    assert URL_PASSWORD not in printed
    assert API_KEY not in printed


def test_an_auth_string_is_a_secret_too(monkeypatch: pytest.MonkeyPatch) -> None:
    found = rows_for({"PREFECT_API_AUTH_STRING": "admin:hunter2"}, monkeypatch)
    assert found["PREFECT_API_AUTH_STRING"].value == "***"


def test_secret_fields_are_the_secret_str_ones() -> None:
    assert is_secret(PrefectSettings, "api_key")
    assert is_secret(PrefectSettings, "api_auth_string")
    assert not is_secret(PrefectSettings, "api_url")
    assert not is_secret(EcsSettings, "queue_url")
    assert not is_secret(EcsSettings, "no_such_field")


def test_changed_keeps_only_what_the_environment_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {"INFRA_OBSERVER_HEALTH_PORT": "9090", "prefect_api_key": API_KEY}
    found = show_config.changed(rows_for(environ, monkeypatch).values())
    assert [(row.variable, row.source) for row in found] == [
        ("PREFECT_API_KEY", "environment (prefect_api_key)"),
        ("INFRA_OBSERVER_HEALTH_PORT", "environment"),
    ]


def test_json_is_a_list_of_objects_with_native_values(monkeypatch: pytest.MonkeyPatch) -> None:
    found = rows_for({"INFRA_OBSERVER_KUBERNETES_NAMESPACES": "a,b"}, monkeypatch)
    decoded = orjson.loads(show_config.as_json(found.values()))
    assert len(decoded) == len(known_variables())
    by_variable = {item["variable"]: item for item in decoded}
    assert by_variable["INFRA_OBSERVER_KUBERNETES_NAMESPACES"] == {
        "section": "kubernetes",
        "variable": "INFRA_OBSERVER_KUBERNETES_NAMESPACES",
        "value": ["a", "b"],
        "source": "environment",
    }
    assert by_variable["INFRA_OBSERVER_HEALTH_ENABLED"]["value"] is True
    assert by_variable["INFRA_OBSERVER_EMITTER_FLUSH_INTERVAL_SECONDS"]["value"] == 0.04
    assert by_variable["INFRA_OBSERVER_EMITTER_SPOOL_DIR"]["value"] is None


def test_the_table_aligns_columns_and_names_what_has_no_value() -> None:
    found = [
        Row(section="prefect", variable="PREFECT_API_KEY", value=None, source="default"),
        Row(section="log", variable="X", value="", source="environment"),
        Row(section="ecs", variable="Y", value=["a", "b"], source="environment (y)"),
        Row(section="docker", variable="Z", value="line\nbreak", source="environment"),
        Row(section="health", variable="W", value=False, source="default"),
    ]
    lines = show_config.as_table(found).splitlines()
    assert lines == [
        "SECTION  VARIABLE         VALUE          SOURCE",
        "prefect  PREFECT_API_KEY  (unset)        default",
        "log      X                (empty)        environment",
        "ecs      Y                a,b            environment (y)",
        "docker   Z                'line\\nbreak'  environment",
        "health   W                false          default",
    ]


def test_the_environment_is_the_only_source_the_settings_read() -> None:
    """What `config` and the reference page say; a dotenv file or secrets directory would
    be a source `config` does not name."""
    for section in SECTIONS:
        config = section.model_config
        assert config.get("env_file") is None, section
        assert config.get("secrets_dir") is None, section
        assert not config.get("cli_parse_args"), section
        customised = section.settings_customise_sources.__func__  # type: ignore[attr-defined]
        assert customised is BaseSettings.settings_customise_sources.__func__  # type: ignore[attr-defined]
