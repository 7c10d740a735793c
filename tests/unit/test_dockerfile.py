"""The Dockerfile's promises, checked without a Docker engine.

The image itself is built and run by tests/integration/test_image.py (peers tier, on Debian 12
stand-ins for the base images). These tests hold the Dockerfile to what the chart and the docs
rely on, in a second: a non-root numeric user, the entry point, a shell-free runtime stage, a
health check that really probes /healthz, a build context that holds what the build copies,
default base images that are the public ones, and bytecode compiled for the interpreter
settings the image runs with.
"""

from __future__ import annotations

import http.server
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
VALUES = ROOT / "helm" / "infra-observer" / "values.yaml"


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]


def logical_lines(text: str) -> Iterator[str]:
    """Instructions with backslash continuations joined and comments dropped."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs (name -> default) and the stages, in order."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif not stages:
            if keyword == "ARG":
                key, _, default = args.partition("=")
                global_args[key] = default.strip('"')
        else:
            stages[-1].instructions.append(Instruction(keyword, args))
    return global_args, stages


def exec_form(args: str) -> list[str]:
    value = yaml.safe_load(args)  # a JSON array is valid YAML
    assert isinstance(value, list), f"not exec form (JSON array): {args}"
    assert all(isinstance(v, str) for v in value)
    return value


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for token in shlex.split(instruction.args):
            key, _, value = token.partition("=")
            env[key] = value
    return env


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def runtime(dockerfile: tuple[dict[str, str], list[Stage]]) -> Stage:
    return dockerfile[1][-1]


@pytest.fixture(scope="module")
def build(dockerfile: tuple[dict[str, str], list[Stage]]) -> Stage:
    named = [stage for stage in dockerfile[1] if stage.name == "build"]
    assert len(named) == 1, "one stage named build"
    return named[0]


def test_multi_stage_with_venv_copied_into_a_distroless_runtime(
    dockerfile: tuple[dict[str, str], list[Stage]], build: Stage, runtime: Stage
) -> None:
    global_args, stages = dockerfile
    assert len(stages) >= 2
    assert build is not runtime
    base = runtime.base
    if base.startswith("${"):
        base = global_args[base.strip("${}")]
    assert base.startswith("gcr.io/distroless/python3-"), base
    copies = [c.args.split() for c in runtime.all("COPY")]
    assert ["--from=build", "/opt/venv", "/opt/venv"] in copies
    # Nothing else from the build context reaches the runtime stage.
    assert all(c[0].startswith("--from=") for c in copies)


def test_base_images_are_build_args_defaulting_to_the_public_ones(
    dockerfile: tuple[dict[str, str], list[Stage]], build: Stage, runtime: Stage
) -> None:
    """Users get the public images; the image test swaps in local stand-ins by build arg."""
    global_args, stages = dockerfile
    assert build.base == "${BUILD_IMAGE}"
    assert runtime.base == "${RUNTIME_IMAGE}"
    # Any other stage is one of the two by another name.
    assert {stage.base for stage in stages} <= {"${BUILD_IMAGE}", "${RUNTIME_IMAGE}"}
    assert global_args["BUILD_IMAGE"] == "debian:12-slim"
    assert global_args["RUNTIME_IMAGE"] == "gcr.io/distroless/python3-debian12:nonroot"


def test_runtime_needs_no_shell(runtime: Stage) -> None:
    # distroless has no /bin/sh: a RUN or a shell-form command would fail there.
    assert runtime.all("RUN") == []
    for keyword in ("ENTRYPOINT", "CMD"):
        for instruction in runtime.all(keyword):
            exec_form(instruction.args)


def test_runs_as_numeric_non_root_user(runtime: Stage) -> None:
    user = runtime.last("USER").args
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), f"USER {user}: Kubernetes can only verify runAsNonRoot for a numeric UID"
    assert int(uid) == 65532
    assert gid.isdigit()
    assert int(gid) != 0


def test_chart_runs_the_image_user() -> None:
    _, stages = parse(DOCKERFILE.read_text())
    uid, _, gid = stages[-1].last("USER").args.partition(":")
    values = yaml.safe_load(VALUES.read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    assert values["podSecurityContext"]["runAsGroup"] == int(gid)
    assert values["securityContext"]["readOnlyRootFilesystem"] is True


def test_entrypoint_runs_the_daemon(runtime: Stage) -> None:
    assert exec_form(runtime.last("ENTRYPOINT").args) == ["infra-observer", "run"]
    assert runtime.all("CMD") == []
    path = env_of(runtime)["PATH"].split(":")
    assert path[0] == "/opt/venv/bin"


def test_health_port_is_exposed_and_served_on_all_container_addresses(runtime: Stage) -> None:
    env = env_of(runtime)
    assert env["INFRA_OBSERVER_HEALTH_HOST"] == "0.0.0.0"
    assert runtime.last("EXPOSE").args == env["INFRA_OBSERVER_HEALTH_PORT"]


def healthcheck_command(runtime: Stage) -> list[str]:
    args = runtime.last("HEALTHCHECK").args
    _, _, command = args.partition("CMD ")
    argv = exec_form(command.strip())
    assert argv[:2] == ["/opt/venv/bin/python", "-c"], argv
    assert "/healthz" in argv[2]
    return argv


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_probes_healthz(runtime: Stage, status: int, healthy: bool) -> None:
    """The image's HEALTHCHECK code, run by this Python against a local /healthz."""
    argv = healthcheck_command(runtime)
    handler = type("Handler", (_Health,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = subprocess.run(
            [sys.executable, "-c", argv[2]],
            env={"INFRA_OBSERVER_HEALTH_PORT": str(server.server_address[1])},
            capture_output=True,
            timeout=30,
            check=False,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert (result.returncode == 0) is healthy, result.stderr.decode()


def test_build_context_holds_what_the_build_copies(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    """.dockerignore is an allow-list: every COPY source must be let in, and exist."""
    lines = DOCKERIGNORE.read_text().splitlines()
    assert "*" in lines, ".dockerignore should exclude everything, then let files in"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for stage in dockerfile[1]:
        for copy in stage.all("COPY"):
            parts = copy.args.split()
            if parts[0].startswith("--from="):
                continue
            for source in parts[:-1]:
                name = source.rstrip("/")
                assert name in allowed, f"COPY {source}: not let in by .dockerignore"
                assert (ROOT / name).exists(), f"COPY {source}: missing from the repository"


OCI_LABELS = ("title", "description", "licenses", "version", "revision", "created", "source")


def test_oci_labels_come_from_build_arguments_declared_after_the_copies(runtime: Stage) -> None:
    """scripts/release sets the org.opencontainers.image.* labels by build argument; declared
    after the last COPY, their values (a new commit, a new time) never invalidate a layer."""
    labels = dict(
        token.partition("=")[::2]
        for label in runtime.all("LABEL")
        for token in shlex.split(label.args)
    )
    declared: dict[str, str] = {}
    for instruction in runtime.all("ARG"):
        key, _, default = instruction.args.partition("=")
        declared[key] = default.strip('"')
    for name in OCI_LABELS:
        value = labels.get(f"org.opencontainers.image.{name}")
        assert value == f"${{{name.upper()}}}", f"org.opencontainers.image.{name}: {value}"
        assert name.upper() in declared, f"ARG {name.upper()} is not declared in the runtime stage"
    assert declared["LICENSES"] == "Apache-2.0"
    positions = [i.keyword for i in runtime.instructions]
    last_copy = max(i for i, keyword in enumerate(positions) if keyword == "COPY")
    assert positions.index("ARG") > last_copy


def aws_services_used() -> set[str]:
    pattern = re.compile(r"create_client\(\s*[\"']([a-z0-9-]+)[\"']")
    used: set[str] = set()
    for path in (ROOT / "src").rglob("*.py"):
        used.update(pattern.findall(path.read_text()))
    return used


def test_botocore_models_kept_for_every_service_the_code_uses(build: Stage) -> None:
    kept: set[str] = set()
    for instruction in build.all("ARG"):
        key, _, value = instruction.args.partition("=")
        if key == "BOTOCORE_SERVICES":
            kept = set(value.strip('"').split())
    used = aws_services_used()
    assert used, "no create_client(...) found: has the ECS source moved?"
    # The credential chain: IRSA (sts), SSO profiles (sso, sso-oidc), console sign-in.
    assert {"sts", "sso", "sso-oidc", "signin"} <= kept
    assert used <= kept, f"add {sorted(used - kept)} to BOTOCORE_SERVICES in the Dockerfile"


def test_venv_built_with_the_runtime_python_version(build: Stage) -> None:
    runs = " ".join(i.args for i in build.all("RUN"))
    interpreter = re.search(r"/usr/bin/python(3\.\d+) -m venv /opt/venv", runs)
    assert interpreter, "the venv must be created by the versioned system interpreter"
    version = interpreter.group(1)
    # Debian 12 (bookworm) and distroless python3-debian12 both ship Python 3.11.
    assert version == "3.11"
    assert f"/opt/venv/lib/python{version}/" in runs


# --------------------------------------------------------------------------- bytecode

SHELL_OPERATORS = {"&&", "||", ";", ";;", "|", "&"}
# compileall's options that take a value (python -m compileall --help).
COMPILEALL_VALUE_OPTIONS = {"-r", "-d", "-s", "-p", "-x", "-i", "-o", "-e", "-j"}


@dataclass
class Compile:
    """One `python -m compileall` of a RUN instruction."""

    interpreter: str
    interpreter_options: list[str]
    levels: list[int]
    invalidation_mode: str
    targets: list[str]
    run: Instruction

    def covers(self, directory: str) -> bool:
        return any(
            directory == target.rstrip("/") or directory.startswith(target.rstrip("/") + "/")
            for target in self.targets
        )

    @property
    def without_column_tables(self) -> bool:
        options = self.interpreter_options
        return any(
            options[i] == "-X" and options[i + 1] == "no_debug_ranges"
            for i in range(len(options) - 1)
        )


def commands(run: Instruction) -> list[list[str]]:
    """The simple commands of a RUN (split at &&, ||, ; and |), each as argv."""
    lexer = shlex.shlex(run.args, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    found: list[list[str]] = [[]]
    for token in lexer:
        if token in SHELL_OPERATORS:
            found.append([])
        else:
            found[-1].append(token)
    return [argv for argv in found if argv]


def compiles(stage: Stage) -> list[Compile]:
    found: list[Compile] = []
    for run in stage.all("RUN"):
        for argv in commands(run):
            if "compileall" not in argv:
                continue
            module = argv.index("compileall")
            assert argv[module - 1] == "-m", argv
            options = argv[1 : module - 1]
            levels: list[int] = []
            mode = "timestamp"
            targets: list[str] = []
            args = iter(argv[module + 1 :])
            for arg in args:
                if arg in COMPILEALL_VALUE_OPTIONS:
                    value = next(args)
                    if arg == "-o":
                        levels.append(int(value))
                elif arg == "--invalidation-mode":
                    mode = next(args)
                elif arg.startswith("--invalidation-mode="):
                    mode = arg.partition("=")[2]
                elif not arg.startswith("-"):
                    targets.append(arg)
            if not levels:  # the compiling interpreter's own level (-O, -OO)
                levels = [sum(o.count("O") for o in options if re.fullmatch(r"-O+", o))]
            found.append(Compile(argv[0], options, levels, mode, targets, run))
    return found


def optimization_level(env: dict[str, str]) -> int:
    """The level PYTHONOPTIMIZE gives: empty is 0, an integer is itself, anything else 1."""
    value = env.get("PYTHONOPTIMIZE", "")
    if not value:
        return 0
    return int(value) if value.isdigit() else 1


def runtime_python(stage: Stage) -> str:
    runs = " ".join(i.args for i in stage.all("RUN"))
    interpreter = re.search(r"/usr/bin/python(3\.\d+) -m venv /opt/venv", runs)
    assert interpreter
    return interpreter.group(1)


def test_interpreter_strips_asserts_docstrings_and_column_tables(runtime: Stage) -> None:
    """Less idle memory and a faster start, with the bytecode compiled to match
    (docs/production.md, "Interpreter settings")."""
    env = env_of(runtime)
    assert env.get("PYTHONOPTIMIZE") == "2"
    assert env.get("PYTHONNODEBUGRANGES") == "1"


def test_venv_compiled_for_the_runtime_interpreter_settings(build: Stage, runtime: Stage) -> None:
    """At level N the interpreter reads only *.opt-N.pyc: on a read-only root, any other
    level means every module of the venv is compiled in memory at each start (more memory,
    not less), and bytecode of a level nothing runs at is image size for nothing. Column
    tables are kept from a .pyc whatever PYTHONNODEBUGRANGES says."""
    env = env_of(runtime)
    venv = [c for c in compiles(build) if c.covers("/opt/venv/lib")]
    assert venv, "the build stage does not compile the venv"
    assert venv[-1].levels == [optimization_level(env)] == [2]
    assert venv[-1].without_column_tables == bool(env.get("PYTHONNODEBUGRANGES"))


def test_standard_library_bytecode_checked_and_copied_into_the_runtime(
    dockerfile: tuple[dict[str, str], list[Stage]], build: Stage, runtime: Stage
) -> None:
    """The runtime base has the standard library's sources only. Its own sources (not the
    build Python's, which may be another patch release) are compiled in the build stage,
    with hashes checked so that no .pyc runs against a source it was not compiled from, and
    only the bytecode is copied over the runtime base's tree."""
    env = env_of(runtime)
    version = runtime_python(build)
    stdlib = f"/usr/lib/python{version}"
    runtime_bases = {s.name for s in dockerfile[1] if s.base == runtime.base and s.name}
    # Copied from the runtime base into a staging tree of the build stage...
    staging = [
        parts[2].rstrip("/").removesuffix(stdlib)
        for parts in (c.args.split() for c in build.all("COPY"))
        if parts[0].removeprefix("--from=") in runtime_bases and parts[1].rstrip("/") == stdlib
    ]
    assert len(staging) == 1, f"the build stage does not copy {stdlib} from the runtime base"
    tree = staging[0]
    assert tree.startswith("/")
    assert tree != "/", "staged apart, not over the build's own Python"
    # ...compiled there as the runtime would...
    found = [c for c in compiles(build) if c.covers(tree + stdlib)]
    assert found, f"the build stage does not compile {tree + stdlib}"
    stdlib_compile = found[-1]
    assert stdlib_compile.interpreter == f"/usr/bin/python{version}"
    assert stdlib_compile.levels == [optimization_level(env)]
    assert stdlib_compile.invalidation_mode == "checked-hash"
    assert stdlib_compile.without_column_tables == bool(env.get("PYTHONNODEBUGRANGES"))
    # ...and only the bytecode is copied into the runtime, over the base's own tree.
    assert f".opt-{optimization_level(env)}.pyc" in stdlib_compile.run.args
    copies = [c.args.split() for c in runtime.all("COPY")]
    assert ["--from=build", f"{tree}/", "/"] in copies or ["--from=build", tree, "/"] in copies


def test_build_smoke_check_runs_as_the_runtime_does(build: Stage, runtime: Stage) -> None:
    """Code that needs asserts or docstrings fails the build rather than the first start."""
    env = env_of(runtime)
    checks = [r.args for r in build.all("RUN") if "infra-observer version" in r.args]
    assert checks
    assert f"PYTHONOPTIMIZE={env['PYTHONOPTIMIZE']}" in checks[-1]
