"""The alert rules and scrape config in deploy/prometheus pass Prometheus's own checker."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.backends.oidc import skip_or_fail

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


@pytest.mark.parametrize(
    "args",
    [("check", "rules", "rules/broadgauge.yml"), ("check", "config", "prometheus.yml")],
)
def test_promtool_accepts_the_files(args: tuple[str, ...]) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        skip_or_fail("promtool is not installed (apt-get install prometheus)")
    assert promtool is not None
    checked = subprocess.run(
        [promtool, *args], cwd=DEPLOY, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout
