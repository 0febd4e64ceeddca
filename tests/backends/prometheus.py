"""A real Prometheus for tests: Debian's ``prometheus`` on loopback, scraping given targets.

:func:`running_prometheus` writes a config scraping each target every second (with the
repository's alert rules loaded), starts ``prometheus`` on a free loopback port with its data
in the given folder, waits until it is ready, and stops it by its PID at the end.  Missing
program: skip with the reason, or fail under ``CI=true`` (``.ci/run`` installs it).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.backends.oidc import skip_or_fail
from tests.cli.processes import free_port

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules" / "broadgauge.yml"


@dataclass(frozen=True)
class Prometheus:
    """A running Prometheus: its base URL."""

    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result vector of an instant query."""
        answer = httpx.get(f"{self.url}api/v1/query", params={"query": expr}, timeout=10)
        body = answer.json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def wait_for(self, expr: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Poll ``expr`` until it returns data (a hang guard, not a timing assertion)."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.5)


@contextmanager
def running_prometheus(directory: Path, targets: dict[str, list[str]]) -> Iterator[Prometheus]:
    """Prometheus scraping ``targets`` (scrape job name → ``host:port`` list) every second."""
    program = shutil.which("prometheus")
    if program is None:
        skip_or_fail("prometheus is not installed (apt-get install prometheus)")
    assert program is not None
    jobs = "\n".join(
        f"  - job_name: {name}\n    static_configs:\n      - targets: {addresses!r}"
        for name, addresses in targets.items()
    )
    config = directory / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {RULES}\nscrape_configs:\n{jobs}\n",
        encoding="utf-8",
    )
    port = free_port()
    log = (directory / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            program,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError((directory / "prometheus.log").read_text()[-2000:])
            try:
                if httpx.get(f"{url}-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("prometheus did not become ready")
            time.sleep(0.2)
        yield Prometheus(url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()
