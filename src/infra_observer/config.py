"""Configuration from environment variables: one settings class per component.

One concern, however long: every setting of the daemon, with its description, in one place.

A base module: the app builds the settings and gives each component only its own class, so
every layer may import it; it imports only `errors`.

Every variable is named `INFRA_OBSERVER_<COMPONENT>_<FIELD>`, except the Prefect variables
users already have (`PREFECT_API_URL`, `PREFECT_API_KEY`, `PREFECT_API_AUTH_STRING`).
Lists are comma-separated. `load_settings` turns every mistake into one line per variable.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from infra_observer.errors import ConfigError

ENV_PREFIX = "INFRA_OBSERVER_"

CommaList = Annotated[list[str], NoDecode]

# Variables of the development scripts and test harness (scripts/provision-peers), not of
# the daemon: set in a developer's shell, they are not misspellings.
TOOLING_VARIABLES = frozenset(
    {
        f"{ENV_PREFIX}CACHE",
        f"{ENV_PREFIX}KUBE_VERSION",
        f"{ENV_PREFIX}GOTOOLCHAIN",
        f"{ENV_PREFIX}SKIP",
    }
)

LOG_LEVEL_ALIASES: Mapping[str, str] = types.MappingProxyType(
    {"warn": "warning", "fatal": "critical"}
)

# `scheme://user:password@host`: everything between `://` and `@` is a credential.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#\s@]+@")


@dataclasses.dataclass(frozen=True, slots=True)
class Below:
    """Field metadata: the value must be below the section's field `other` (`why` explains)."""

    other: str
    why: str = ""


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class _Section(BaseSettings):
    # A duration or size of `inf` or `nan` would pass every lower bound and then wait forever.
    model_config = SettingsConfigDict(
        extra="ignore", frozen=True, validate_default=True, allow_inf_nan=False
    )

    @model_validator(mode="after")
    def _ordered(self) -> typing.Self:
        section = type(self)
        for name, info in section.model_fields.items():
            for bound in info.metadata:
                if not isinstance(bound, Below):
                    continue
                value, limit = getattr(self, name), getattr(self, bound.other)
                if value >= limit:
                    raise ValueError(
                        f"{env_name(section, name)}={value} must be below "
                        f"{env_name(section, bound.other)}={limit}{bound.why}"
                    )
        return self


class PrefectSettings(_Section):
    """Where events go: the variables the Prefect client itself reads."""

    model_config = SettingsConfigDict(env_prefix="PREFECT_")

    api_url: pydantic.HttpUrl | None = Field(
        default=None,
        description="Events API base, e.g. http://127.0.0.1:4200/api or a Cloud workspace URL. "
        "Unset: events are written to stdout as JSON lines.",
    )
    api_key: SecretStr | None = Field(
        default=None, description="Prefect Cloud API key, sent as a bearer token."
    )
    api_auth_string: SecretStr | None = Field(
        default=None,
        description="`user:password` for a self-hosted server with basic auth.",
    )

    @model_validator(mode="after")
    def _one_credential(self) -> PrefectSettings:
        if self.api_key is not None and self.api_auth_string is not None:
            raise ValueError("set PREFECT_API_KEY (Cloud) or PREFECT_API_AUTH_STRING, not both")
        return self


class EmitterSettings(_Section):
    """Queueing, batching and delivery."""

    model_config = SettingsConfigDict(env_prefix=f"{ENV_PREFIX}EMITTER_")

    sink: Literal["auto", "events-api", "stdout"] = Field(
        default="auto",
        description="`auto`: the events API when PREFECT_API_URL is set, else stdout.",
    )
    queue_size: int = Field(
        default=10_000,
        ge=1,
        description="Events held in memory before sources wait (backpressure, nothing dropped).",
    )
    batch_max_events: int = Field(default=200, ge=1, le=10_000, description="Events per POST.")
    batch_max_bytes: int = Field(
        default=4_000_000, ge=1_500_000, description="Serialized bytes per POST."
    )
    flush_interval_seconds: float = Field(
        default=0.04,
        gt=0,
        description="Longest wait of an event for its batch to fill before the batch is sent. "
        "Shorter: lower latency, more POSTs; longer: fewer, fuller POSTs.",
    )
    request_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Timeout of one POST to the events API."
    )
    retry_initial_seconds: float = Field(
        default=0.5, gt=0, description="First retry delay; doubles per attempt, with jitter."
    )
    retry_max_seconds: float = Field(
        default=30.0, gt=0, description="Longest delay between delivery attempts."
    )
    drain_seconds: float = Field(
        default=20.0,
        ge=0,
        description="On shutdown, how long queued events may take to be delivered.",
    )
    follows_max_resources: int = Field(
        default=100_000,
        ge=1,
        description="Resources whose latest event is remembered for `follows` (LRU).",
    )
    sent_ids_max: int = Field(
        default=200_000,
        ge=1,
        description="Delivered event ids remembered so one id is sent once per process (LRU).",
    )
    ca_bundle: FilePath | None = Field(
        default=None, description="PEM file of CA certificates to verify the events API with."
    )
    spool_dir: Path | None = Field(
        default=None,
        description="Directory of the on-disk spool and checkpoint; unset: memory only, and "
        "what is queued at a crash is lost (see docs/reliability.md).",
    )
    spool_max_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024 * 1024,
        description="Spool size at which sources wait for delivery to free space.",
    )
    checkpoint_interval_seconds: float = Field(
        default=5.0, gt=0, description="How often the last delivered event per resource is saved."
    )
    skip_stored: bool = Field(
        default=True,
        description="Events API sink: before sending events an earlier process may have "
        "delivered (the first of each resource since the start, occurred before it), ask "
        "the server which it already stores (one `/events/filter` read per 50 ids) and send "
        'only the others; a failed read sends them. See docs/reliability.md, "Restarts".',
    )


class HealthSettings(_Section):
    """The HTTP server for probes and metrics."""

    model_config = SettingsConfigDict(env_prefix=f"{ENV_PREFIX}HEALTH_")

    enabled: bool = Field(default=True, description="Serve /healthz, /readyz and /metrics.")
    host: str = Field(default="127.0.0.1", description="Address to listen on (0.0.0.0 in a pod).")
    port: int = Field(default=8080, ge=0, le=65535, description="Port to listen on (0: any).")


class LogSettings(_Section):
    """Logging."""

    model_config = SettingsConfigDict(env_prefix=f"{ENV_PREFIX}LOG_")

    level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        default="info",
        description="Lowest level logged, in any case; `warn` and `fatal` are accepted too.",
    )
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="`auto`: console on a terminal, JSON lines otherwise."
    )

    @field_validator("level", mode="before")
    @classmethod
    def _level_alias(cls, value: Any) -> Any:
        return log_level_name(value) if isinstance(value, str) else value

    @field_validator("format", mode="before")
    @classmethod
    def _format_any_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


def log_level_name(text: str) -> str:
    """`INFO`, ` Warn ` → `info`, `warning`: any case, and the usual aliases."""
    name = text.strip().lower()
    return LOG_LEVEL_ALIASES.get(name, name)


class KubernetesSettings(_Section):
    """The Kubernetes pod watcher."""

    model_config = SettingsConfigDict(env_prefix=f"{ENV_PREFIX}KUBERNETES_")

    enabled: bool = Field(default=False, description="Watch pods labelled prefect.io/flow-run-id.")
    namespaces: CommaList = Field(
        default_factory=list, description="Namespaces to watch; empty: the whole cluster."
    )
    label_selector: str = Field(
        default="",
        description="Extra label selector, ANDed with `prefect.io/flow-run-id` on the server.",
    )
    kubeconfig: Path | None = Field(
        default=None, description="Kubeconfig file; unset: in-cluster config, else $KUBECONFIG."
    )
    context: str | None = Field(default=None, description="Kubeconfig context to use.")
    watch_timeout_seconds: int = Field(
        default=300, ge=1, description="Server-side timeout of one watch request."
    )
    inactivity_timeout_seconds: float = Field(
        default=330.0,
        gt=0,
        description="A watch silent this long (no event, no bookmark) is replaced.",
    )
    backoff_max_seconds: float = Field(
        default=30.0, gt=0, description="Longest delay between reconnection attempts."
    )
    read_coalesce_seconds: float = Field(
        default=0.15,
        ge=0,
        le=1,
        description="Before waiting for more watch events, the stream is left unread this "
        "long, so that the events arriving meanwhile are read and handled together: less CPU "
        "per pod change while pods change often, for at most this much more latency (the "
        "first change after a quiet spell is read at once). Lower it, down to 0 (each event "
        "read as it arrives), when latency matters more than CPU; raise it when many pods "
        "change at once and CPU is short.",
    )
    shard_count: int = Field(
        default=1,
        ge=1,
        description="Replicas sharing the pods by uid hash (each watches all labelled pods "
        "but holds and reports only its share).",
    )
    shard_index: Annotated[int, Below("shard_count")] = Field(
        default=0, ge=0, description="This replica's share, from 0 to SHARD_COUNT - 1."
    )
    event_id_scheme: Literal["contract", "prefect-kubernetes"] = Field(
        default="contract",
        description="How pod event ids are made: `contract`, uuid5 of the phase, restart "
        "count and uid (the events contract); `prefect-kubernetes`, the same plus the "
        "diagnosis, as current prefect-kubernetes does, so that both observers deduplicate "
        "while they run side by side, and each change of diagnosis is an event.",
    )

    _split = field_validator("namespaces", mode="before")(_split_commas)


class DockerSettings(_Section):
    """The Docker container watcher."""

    model_config = SettingsConfigDict(env_prefix=f"{ENV_PREFIX}DOCKER_")

    enabled: bool = Field(default=False, description="Watch containers of Prefect flow runs.")
    host: str | None = Field(
        default=None,
        description="Docker endpoint; unset: $DOCKER_HOST, else unix:///var/run/docker.sock.",
    )
    tls_verify: bool | None = Field(
        default=None, description="Use TLS with client certificates; unset: $DOCKER_TLS_VERIFY."
    )
    cert_path: Path | None = Field(
        default=None,
        description="Directory with ca.pem, cert.pem, key.pem; unset: $DOCKER_CERT_PATH.",
    )
    label_filters: CommaList = Field(
        default_factory=list,
        description="Extra label filters (`key` or `key=value`), all of which must match.",
    )
    worker_name: str | None = Field(
        default=None,
        description="Worker named on events of containers without a worker label; "
        "unset: the Docker host's name.",
    )
    backoff_max_seconds: float = Field(
        default=30.0, gt=0, description="Longest delay between reconnection attempts."
    )
    mark_crashed: bool = Field(
        default=False,
        description="Propose Crashed to the flow run of a container that exits non-zero or "
        "is OOM-killed, with a diagnosis and the container's last log lines. Off: Prefect's "
        "Docker worker does it; turn it on when that worker is gone, or when something else "
        "started the containers.",
    )

    _split = field_validator("label_filters", mode="before")(_split_commas)


class EcsSettings(_Section):
    """The ECS task watcher (EventBridge to SQS)."""

    model_config = SettingsConfigDict(env_prefix=f"{ENV_PREFIX}ECS_")

    enabled: bool = Field(default=False, description="Consume ECS Task State Change events.")
    queue_url: str | None = Field(
        default=None, description="URL of the SQS queue EventBridge delivers to."
    )
    region: str | None = Field(
        default=None, description="AWS region; unset: the standard AWS configuration chain."
    )
    endpoint_url: str | None = Field(
        default=None, description="Endpoint override for SQS and ECS (compatible services)."
    )
    max_messages: int = Field(default=10, ge=1, le=10, description="Messages per receive call.")
    wait_time_seconds: int = Field(default=20, ge=0, le=20, description="SQS long-poll wait.")
    concurrency: int = Field(default=10, ge=1, description="Messages handled at once.")
    visibility_timeout_seconds: int = Field(
        default=60,
        ge=5,
        le=43_200,
        description="Visibility kept (and extended) while a message is handled.",
    )
    delete_invalid_messages: bool = Field(
        default=False,
        description="Delete messages that are not ECS task state changes (and those whose "
        "event the events API refuses), instead of leaving them to the queue's dead-letter "
        "policy.",
    )
    tag_filters: CommaList = Field(
        default_factory=list,
        description="Extra task tag filters (`key` or `key=value`), all of which must match.",
    )
    tags_cache_size: int = Field(
        default=10_000,
        ge=1,
        description="Tasks whose tags and last delivered `detail.version` are remembered (LRU).",
    )
    backoff_max_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Longest delay between retries after SQS errors, and before a message "
        "whose task tags could not be read is received again.",
    )

    _split = field_validator("tag_filters", mode="before")(_split_commas)

    @field_validator("tag_filters")
    @classmethod
    def _filters_have_keys(cls, filters: list[str]) -> list[str]:
        for text in filters:
            if not text.partition("=")[0].strip():
                raise ValueError(f"tag filter {text!r} has no key; write `key` or `key=value`")
        return filters

    @model_validator(mode="after")
    def _queue_when_enabled(self) -> EcsSettings:
        if self.enabled and not self.queue_url:
            raise ValueError("INFRA_OBSERVER_ECS_QUEUE_URL is required when the ECS source is on")
        return self


class LeaderElectionSettings(_Section):
    """Leader election: several replicas, one emitting, over a coordination.k8s.io Lease."""

    model_config = SettingsConfigDict(env_prefix=f"{ENV_PREFIX}LEADER_ELECTION_")

    enabled: bool = Field(
        default=False,
        description="Run the sources only while holding the Lease (credentials as for the "
        "Kubernetes source: INFRA_OBSERVER_KUBERNETES_KUBECONFIG/_CONTEXT or in-cluster).",
    )
    lease_name: str = Field(default="infra-observer", min_length=1, description="Lease name.")
    namespace: str = Field(
        default="default",
        min_length=1,
        description="Namespace of the Lease (the chart sets the release namespace).",
    )
    identity: str | None = Field(
        default=None, description="This replica's name in the Lease; unset: hostname and pid."
    )
    lease_duration_seconds: int = Field(
        default=15, ge=2, description="How long a Lease not renewed stays with its holder."
    )
    renew_deadline_seconds: Annotated[
        float,
        Below("lease_duration_seconds", why=", or two replicas could both believe they lead"),
    ] = Field(
        default=10.0, gt=0, description="A leader that cannot renew for this long steps down."
    )
    retry_period_seconds: float = Field(
        default=2.0, gt=0, description="How often to try to acquire or renew the Lease."
    )


class LifecycleSettings(_Section):
    """What the daemon does to flow runs, from what the sources observe."""

    model_config = SettingsConfigDict(env_prefix=f"{ENV_PREFIX}LIFECYCLE_")

    enabled: bool = Field(
        default=True,
        description="Act on flow runs through the orchestration and logs API at "
        "PREFECT_API_URL (the switches below choose how). Off: events only, as before. "
        "Turn off while another observer still does this work.",
    )
    propose_pending: bool = Field(
        default=True,
        description="Propose `InfrastructurePending` to a scheduled or pending run whose "
        "infrastructure is not running yet (a Pending pod, a PROVISIONING or PENDING task).",
    )
    propose_crashed: bool = Field(
        default=True,
        description="Propose `Crashed` to a pending or running run whose infrastructure "
        "failed: a Kubernetes Job failed or deleted, a bare pod Failed, an ECS task stopped "
        "with a failed flow container, and with INFRA_OBSERVER_DOCKER_MARK_CRASHED a Docker "
        "container that exited non-zero. Needs `jobs` get/list/watch on Kubernetes.",
    )
    diagnosis_logs: bool = Field(
        default=True,
        description="Write one line to the run's logs for each new diagnosis (OOMKilled, "
        "ImagePullError, Unschedulable…), with a resolution.",
    )
    crash_log_lines: int = Field(
        default=500,
        ge=0,
        le=10_000,
        description="Last lines of the crashed infrastructure's logs written to the run's "
        "logs once its crash is accepted; 0: none. Needs `pods/log` get on Kubernetes and "
        "`logs:GetLogEvents` on ECS.",
    )
    queue_size: int = Field(
        default=10_000,
        ge=1,
        description="Flow runs waiting for a proposal or a log write while the API is slow "
        "or down; past it, new work is dropped, logged and counted (events are not).",
    )


SECTIONS: tuple[type[_Section], ...] = (
    PrefectSettings,
    EmitterSettings,
    HealthSettings,
    LogSettings,
    KubernetesSettings,
    DockerSettings,
    EcsSettings,
    LeaderElectionSettings,
    LifecycleSettings,
)


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    prefect: PrefectSettings
    emitter: EmitterSettings
    health: HealthSettings
    log: LogSettings
    kubernetes: KubernetesSettings
    docker: DockerSettings
    ecs: EcsSettings
    leader_election: LeaderElectionSettings
    lifecycle: LifecycleSettings


def env_name(section: type[_Section], field: str) -> str:
    return f"{section.model_config.get('env_prefix', '')}{field}".upper()


def load_settings() -> Settings:
    """Read every section from the environment; raise one ConfigError listing every mistake."""
    loaded: dict[str, _Section] = {}
    problems: list[str] = []
    for field, section in zip(dataclasses.fields(Settings), SECTIONS, strict=True):
        try:
            loaded[field.name] = section()
        except pydantic.ValidationError as exc:
            problems.extend(_describe(section, exc))
    if problems:
        raise ConfigError("\n".join(problems))
    return Settings(**loaded)  # type: ignore[arg-type]


def _describe(section: type[_Section], exc: pydantic.ValidationError) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False):
        location = error["loc"]
        if location:
            name = env_name(section, str(location[0]))
            shown = _redacted(section, str(location[0]), error.get("input"))
            lines.append(f"{name}={shown}: {error['msg']}")
        else:
            lines.append(str(error["msg"]).removeprefix("Value error, "))
    return lines


def _redacted(section: type[_Section], field: str, value: object) -> str:
    if is_secret(section, field):
        return "'********'"
    return redact_credentials(repr(value))


def is_secret(section: type[_Section], field: str) -> bool:
    """Whether the setting holds a secret, never to be shown (an unknown field holds none)."""
    info = section.model_fields.get(field)
    return info is not None and _mentions_secret(info.annotation)


def _mentions_secret(annotation: object) -> bool:
    if annotation is SecretStr:
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(_mentions_secret(arg) for arg in typing.get_args(annotation))
    return False


def redact_credentials(text: str) -> str:
    """`text` with the credentials of every URL in it (`http://user:pass@host`) masked."""
    if "@" not in text:  # the common case, and the cheap test
        return text
    return _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)


@dataclasses.dataclass(frozen=True, slots=True)
class ConfigWarning:
    """A setting that is accepted but is probably not what was meant."""

    event: str
    variable: str
    message: str
    closest: str | None = None


def known_variables() -> list[str]:
    return [env_name(section, field) for section in SECTIONS for field in section.model_fields]


def unknown_variables(environ: Mapping[str, str]) -> list[ConfigWarning]:
    """Every `INFRA_OBSERVER_*` variable that no setting reads, with the closest known name."""
    known = known_variables()
    warnings = []
    for name in sorted(environ):
        upper = name.upper()  # the settings read their variables in any case
        if not upper.startswith(ENV_PREFIX) or upper in known or upper in TOOLING_VARIABLES:
            continue
        matches = difflib.get_close_matches(upper, known, n=1)
        closest = matches[0] if matches else None
        hint = f"did you mean {closest}?" if closest else "see docs/configuration.md"
        warnings.append(
            ConfigWarning(
                event="unknown_variable",
                variable=name,
                message=f"not a known variable, ignored; {hint}",
                closest=closest,
            )
        )
    return warnings


def api_url_problem(prefect: PrefectSettings) -> str | None:
    """Why PREFECT_API_URL cannot be an events API base, found without a request."""
    url = prefect.api_url
    if url is None or "api" in (url.path or "").strip("/").split("/"):
        return None
    return (
        f"PREFECT_API_URL={redact_credentials(str(url))!r} has no /api in its path; it must "
        "end in /api (self-hosted, e.g. http://127.0.0.1:4200/api) or be a Cloud workspace "
        "URL (https://api.prefect.cloud/api/accounts/<id>/workspaces/<id>)"
    )


def credential_warnings(prefect: PrefectSettings) -> list[ConfigWarning]:
    """A credential that goes nowhere, or that is sent unencrypted over the network."""
    url = prefect.api_url
    key = (
        "PREFECT_API_KEY"
        if prefect.api_key is not None
        else "PREFECT_API_AUTH_STRING"
        if prefect.api_auth_string is not None
        else None
    )
    if url is None:
        if key is None:
            return []
        message = (
            "set, but PREFECT_API_URL is not: events are written to stdout as JSON lines "
            "and the credential is not used; set PREFECT_API_URL to send them to Prefect"
        )
        return [ConfigWarning(event="credential_unused", variable=key, message=message)]
    if url.username or url.password:
        key = key or "PREFECT_API_URL"
    if key is None or url.scheme != "http" or _is_loopback(url.host or ""):
        return []
    message = (
        f"sent over plain http:// to {url.host}, readable by anyone on the network path; "
        "use an https:// PREFECT_API_URL"
    )
    return [ConfigWarning(event="credential_in_clear", variable=key, message=message)]


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def configuration_warnings(settings: Settings, environ: Mapping[str, str]) -> list[ConfigWarning]:
    """What `check` prints and `run` logs as warnings: accepted, but probably a mistake."""
    return [*unknown_variables(environ), *credential_warnings(settings.prefect)]


def reference_markdown() -> str:
    """The configuration reference page, generated from the settings classes."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from `src/infra_observer/config.py` "
        "(`python -m infra_observer.config > docs/configuration.md`); a test keeps it in step.",
        "Lists are comma-separated. Secrets, and credentials written into a URL, are never "
        f"logged or printed. A `{ENV_PREFIX}*` variable not listed here is reported, with "
        "the closest known name, by `infra-observer check` and in the logs of "
        "`infra-observer run`.",
        "",
        "## The effective configuration",
        "",
        "`infra-observer config` prints every setting below: its section, its variable, its "
        "effective value and its source, `default` or `environment` (with the name as written "
        "when it differs in case: names are read in any case). The environment is the only "
        "source: no dotenv file, no secrets directory. Secrets, and credentials written into "
        "a URL, are shown as `***`; a setting without a value as `(unset)`. `--json` prints a "
        "JSON array of objects (`section`, `variable`, `value`, `source`; `null` for no "
        "value), `--changed` only the settings the environment sets. An invalid configuration "
        "is reported as by `infra-observer run`, with exit status 2.",
    ]
    for section in SECTIONS:
        title = (section.__doc__ or section.__name__).rstrip(".")
        lines += ["", f"## {title}", "", "| variable | type | bounds | default | meaning |"]
        lines.append("|---|---|---|---|---|")
        for field, info in section.model_fields.items():
            default = (
                "" if info.is_required() else repr(info.get_default(call_default_factory=True))
            )
            cells = (
                f"`{env_name(section, field)}`",
                type_name(info.annotation),
                _bounds(section, info.metadata),
                f"`{default}`",
                (info.description or "").replace("|", "\\|"),
            )
            lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


_TYPE_NAMES: Mapping[object, str] = types.MappingProxyType(
    {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        Path: "path",
        SecretStr: "secret",
        pydantic.HttpUrl: "URL",
    }
)


def type_name(annotation: object) -> str:
    """A setting's type in words: `path of an existing file (optional)`, not its annotation."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or isinstance(annotation, types.UnionType):
        names = [type_name(arg) for arg in args if arg is not type(None)]
        optional = " (optional)" if len(names) < len(args) else ""
        return " or ".join(names) + optional
    if origin is Annotated:
        if any(getattr(extra, "path_type", None) == "file" for extra in args[1:]):
            return "path of an existing file"
        return type_name(args[0])
    if origin is Literal:
        choices = [f"`{choice}`" for choice in args]
        return f"{', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else choices[0]
    if origin is list:
        return f"comma-separated list of {type_name(args[0])}s" if args else "list"
    return _TYPE_NAMES.get(annotation) or str(getattr(annotation, "__name__", annotation))


def _bounds(section: type[_Section], metadata: list[Any]) -> str:
    found: dict[str, Any] = {}
    for item in metadata:
        for attribute in ("ge", "gt", "le", "lt", "min_length"):
            if getattr(item, attribute, None) is not None:
                found[attribute] = getattr(item, attribute)
        if isinstance(item, Below):
            found["below"] = env_name(section, item.other)
    parts = []
    if "ge" in found and "le" in found:
        parts.append(f"{_number(found.pop('ge'))} to {_number(found.pop('le'))}")
    symbols = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    parts += [f"{symbols[key]} {_number(found[key])}" for key in symbols if key in found]
    if found.get("min_length"):
        parts.append("not empty")
    if "below" in found:
        parts.append(f"< `{found['below']}`")
    return ", ".join(parts)


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


if __name__ == "__main__":
    print(reference_markdown(), end="")  # noqa: T201
