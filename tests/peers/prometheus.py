"""Debian's Prometheus server and promtool, for the chart's alert rules.

The server starts with nothing to scrape; a test hands it scrape targets and rule files with
``configure``, which rewrites the configuration and reloads it (``/-/reload``), so one server
serves the whole session.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from ._util import ManagedProcess, OneProcessPeer, free_port, provisioned, short_tempdir


def promtool(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the provisioned promtool; the caller checks the exit code and output."""
    return subprocess.run(
        [str(provisioned("promtool")), *(str(a) for a in args)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class PrometheusPeer(OneProcessPeer):
    """``prometheus`` on a free loopback port, evaluating rules every ``interval``.

    Attributes: ``url``, ``interval`` (scrape and evaluation, "1s"); ``configure(jobs,
    rule_files)``, ``alerts()``, ``query(expr)``.
    """

    def __init__(self, *, interval: str = "1s") -> None:
        super().__init__(short_tempdir("io-prom-"))
        self.binary = provisioned("prometheus")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.interval = interval
        self._config = self.state_dir / "prometheus.yml"

    def start(self) -> PrometheusPeer:
        self._write_config([], [])
        proc = ManagedProcess(
            "prometheus",
            [
                self.binary,
                f"--config.file={self._config}",
                f"--storage.tsdb.path={self.state_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            log_path=self.state_dir / "prometheus.log",
        )

        def ready() -> bool | None:
            return True if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200 else None

        return self._launch(proc, ready=ready, timeout=60)

    def configure(self, jobs: Mapping[str, Mapping[str, Any]], rule_files: Sequence[Path]) -> None:
        """Scrape ``jobs`` (job name -> a static_configs entry: ``targets`` and ``labels``)
        and evaluate ``rule_files``, from now on; a configuration Prometheus refuses fails."""
        self._write_config(
            [
                {"job_name": name, "metrics_path": "/metrics", "static_configs": [dict(target)]}
                for name, target in jobs.items()
            ],
            [str(path) for path in rule_files],
        )
        response = httpx.post(f"{self.url}/-/reload", timeout=30)
        assert response.status_code == 200, f"reload refused: {response.text}"

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing) from the HTTP API."""
        data = self._api("/api/v1/alerts")
        alerts: list[dict[str, Any]] = data["alerts"]
        return alerts

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector."""
        data = self._api("/api/v1/query", params={"query": expr})
        result: list[dict[str, Any]] = data["result"]
        return result

    def diagnostics(self) -> str:
        return self._proc.diagnostics() if self._proc is not None else ""

    def _api(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        assert body["status"] == "success", body
        data: dict[str, Any] = body["data"]
        return data

    def _write_config(self, scrape_configs: list[dict[str, Any]], rule_files: list[str]) -> None:
        config = {
            "global": {
                "scrape_interval": self.interval,
                "scrape_timeout": self.interval,
                "evaluation_interval": self.interval,
            },
            "rule_files": rule_files,
            "scrape_configs": scrape_configs,
        }
        tmp = self._config.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config))
        tmp.rename(self._config)
