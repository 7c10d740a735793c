"""Shared plumbing for the peers: cache lookup, free ports, readiness waits, process groups."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Self, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

PROVISION_HINT = "run scripts/provision-peers first"


class PeerUnavailableError(RuntimeError):
    """A peer could not be located or started."""


def cache_dir() -> Path:
    """The provisioning cache, shared with scripts/provision-peers."""
    configured = os.environ.get("INFRA_OBSERVER_CACHE")
    base = Path(configured) if configured else Path.home() / ".cache" / "infra-observer"
    return base.expanduser()


def manifest() -> dict[str, str]:
    path = cache_dir() / "peers.json"
    if not path.exists():
        raise PeerUnavailableError(f"{path} is missing: {PROVISION_HINT}")
    data: dict[str, str] = json.loads(path.read_text())
    return data


def provisioned(key: str) -> Path:
    """Path of a provisioned binary or file, failing with a hint when it is not there."""
    value = manifest().get(key)
    if not value:
        raise PeerUnavailableError(f"{key} not provisioned in {cache_dir()}: {PROVISION_HINT}")
    path = Path(value)
    if not path.exists():
        raise PeerUnavailableError(f"{path} ({key}) is missing: {PROVISION_HINT}")
    return path


def free_port() -> int:
    """A TCP port on loopback that is free right now.

    There is a small race between closing and the peer binding it; every peer binds
    within seconds, which has been good enough in practice.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def short_tempdir(prefix: str) -> Path:
    """A temp dir under /tmp: unix socket paths must stay under 108 bytes."""
    base = "/tmp" if Path("/tmp").is_dir() else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key: (cert, key) files."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.2,
    what: str,
    alive: Callable[[], bool] | None = None,
    diagnostics: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns something other than None (exceptions count as not yet).

    ``alive`` lets the wait fail fast when the peer process has already died.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = probe()
        except Exception as exc:  # any failure just means "not ready yet"
            last_error = exc
            result = None
        if result is not None:
            return result
        if alive is not None and not alive():
            extra = diagnostics() if diagnostics else ""
            raise PeerUnavailableError(f"{what}: process exited before ready\n{extra}")
        if time.monotonic() >= deadline:
            extra = diagnostics() if diagnostics else ""
            raise PeerUnavailableError(
                f"{what}: not ready after {timeout:.0f}s (last error: {last_error!r})\n{extra}"
            )
        time.sleep(interval)


def tail(path: Path, lines: int = 30) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(content[-lines:])


class ManagedProcess:
    """A child process in its own process group, so stopping it reaches its children too."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.running():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            out.write(f"\n=== start {' '.join(self.argv)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        log.info("started %s (pid %s)", self.name, self.proc.pid)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left of it."""
        proc = self.proc
        if proc is None:
            return
        pgid = proc.pid  # start_new_session makes the child its group's leader
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs, killing", self.name, timeout)
        # Children may outlive a leader that exited; the group id still reaches them.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        self.proc = None
        log.info("stopped %s", self.name)

    def diagnostics(self) -> str:
        return f"--- last lines of {self.log_path}:\n{tail(self.log_path)}"

    def wait_ready(
        self,
        ready: Callable[[], T | None],
        *,
        timeout: float,
        interval: float = 0.2,
        what: str | None = None,
    ) -> T:
        """``wait_until(ready)``, failing at once, with the log's last lines, if the process
        exits first."""
        return wait_until(
            ready,
            timeout=timeout,
            interval=interval,
            what=what or self.name,
            alive=self.running,
            diagnostics=self.diagnostics,
        )


def kill_processes_mentioning(marker: str) -> None:
    """Kill leftover processes whose command line names our private state dir.

    Daemons such as containerd shims leave the process group on purpose; the unique
    temp path in their arguments identifies them as ours and nobody else's.
    """
    own = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)


def remove_tree(path: Path) -> None:
    """Remove a temp dir, unmounting anything a daemon left mounted below it first."""
    if not path.exists():
        return
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        mounts = []
    prefix = str(path) + "/"
    targets = [m.split()[1] for m in mounts if len(m.split()) > 1]
    for target in sorted((t for t in targets if t.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


class OneProcessPeer:
    """A peer that is one process in a state directory of its own: `_launch` starts it and
    waits until `ready` answers (stopping it again when it does not); `stop` ends it and
    removes the directory. Subclasses write `start`."""

    stop_timeout = 15.0
    # The process starts children that leave its group on purpose (containerd shims):
    # `stop` then kills every process whose command line names the state directory.
    detached_children = False

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._proc: ManagedProcess | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def _launch(
        self,
        proc: ManagedProcess,
        *,
        ready: Callable[[], bool | None],
        timeout: float,
        interval: float = 0.2,
    ) -> Self:
        self._proc = proc
        proc.start()
        try:
            proc.wait_ready(ready, timeout=timeout, interval=interval)
        except BaseException:
            self.stop()
            raise
        return self

    def _stop_process(self) -> None:
        """End the process and keep the state directory (for a restart)."""
        if self._proc is not None:
            self._proc.stop(timeout=self.stop_timeout)
            self._proc = None

    def stop(self) -> None:
        self._stop_process()
        if self.detached_children:
            kill_processes_mentioning(str(self.state_dir))
        remove_tree(self.state_dir)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
